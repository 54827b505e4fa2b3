-- recalc schema, version 1.
--
-- Two halves:
--   * inputs, written only by `recalc import`: model_section (the small
--     configuration sections as JSON), record, share_input, team, change;
--   * materialized access, written only by `recalc run`: acl_object, acl_user,
--     acl_member (the group closure), acl_record and acl_share (share rows at
--     group grain). Reads (access_level, `recalc access`) use only these, so an
--     import changes no one's access until the next run.

-- Configuration sections (objects, roles, users, groups, territories, rules),
-- one JSON list each, exactly as last imported.
CREATE TABLE recalc.model_section (
    name text PRIMARY KEY,
    doc  jsonb NOT NULL
);

-- The configuration sections the materialized tables were last computed from.
CREATE TABLE recalc.applied_section (
    name text PRIMARY KEY,
    doc  jsonb NOT NULL
);

CREATE TABLE recalc.record (
    rid         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text NOT NULL UNIQUE,
    object      text NOT NULL,
    owner       text NOT NULL,
    parent      text,
    -- id of the top ancestor: a record's family is all records sharing it
    root_id     text COLLATE "C" NOT NULL,
    fields      jsonb NOT NULL DEFAULT '{}',
    territories text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX record_root_idx ON recalc.record (root_id);

-- Manual and apex shares: inputs, never recalculated away.
CREATE TABLE recalc.share_input (
    record  text NOT NULL,
    object  text NOT NULL,
    grantee text NOT NULL,
    access  smallint NOT NULL,
    cause   text NOT NULL,
    PRIMARY KEY (record, grantee, cause)
);

CREATE TABLE recalc.team (
    record             text NOT NULL,
    user_id            text NOT NULL,
    access             smallint NOT NULL,
    contact_access     smallint NOT NULL DEFAULT 0,
    opportunity_access smallint NOT NULL DEFAULT 0,
    case_access        smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (record, user_id)
);

-- What changed since the materialized tables were last computed: the
-- incremental planner's input. kind is 'section' (key: section name) or
-- 'record' (key: record id, for a record inserted, updated or deleted, or
-- whose shares or team changed).
CREATE TABLE recalc.change (
    seq  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    key  text NOT NULL,
    at   timestamptz NOT NULL DEFAULT now()
);

-- Stable integer ids for users and grantees, so the closure and share rows
-- stay small and survive recalculation. Append-only dictionaries.
CREATE TABLE recalc.principal (
    uid integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id  text NOT NULL UNIQUE
);
CREATE TABLE recalc.grantee (
    gid integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key text NOT NULL UNIQUE     -- user:ID, group:ID, role:ID, territory:ID, ...
);

-- Materialized, as of the last run. Levels: 0 none, 1 read, 2 edit, 3 all.
CREATE TABLE recalc.acl_object (
    name           text PRIMARY KEY,
    internal_level smallint NOT NULL,
    external_level smallint NOT NULL,
    cbp            boolean NOT NULL
);

-- Active users only: inactive users have no access.
CREATE TABLE recalc.acl_user (
    uid      integer PRIMARY KEY,
    id       text NOT NULL UNIQUE,
    internal boolean NOT NULL
);

-- The group closure: which active users each grantee reaches. boss is true
-- when the user is reached only through the role hierarchy, so it counts
-- only on share rows whose object grants access using hierarchies.
CREATE TABLE recalc.acl_member (
    gid  integer NOT NULL,
    uid  integer NOT NULL,
    boss boolean NOT NULL,
    PRIMARY KEY (gid, uid)
);
CREATE INDEX acl_member_uid_idx ON recalc.acl_member (uid, gid);

-- access_root is the record whose share rows and OWD also apply: the record
-- itself, or for a controlled-by-parent record its nearest ancestor that is
-- not (NULL when the chain ends first).
CREATE TABLE recalc.acl_record (
    rid         bigint PRIMARY KEY,
    id          text NOT NULL UNIQUE,
    object      text NOT NULL,
    access_root bigint
);

-- Share rows at group grain.
CREATE TABLE recalc.acl_share (
    rid     bigint NOT NULL,
    gid     integer NOT NULL,
    level   smallint NOT NULL,
    cause   text NOT NULL,
    boss_ok boolean NOT NULL,
    PRIMARY KEY (rid, gid, cause)
);
CREATE INDEX acl_share_gid_idx ON recalc.acl_share (gid, rid);

-- access_level answers "what access does user p_user have to record
-- p_record", as 'none', 'read', 'edit' or 'all', from the materialized tables
-- with index lookups only.
CREATE FUNCTION recalc.access_level(p_user text, p_record text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (ARRAY['none', 'read', 'edit', 'all'])[1 + coalesce(max(l), 0)]
    FROM (
        SELECT s.level AS l
        FROM recalc.acl_user u
        JOIN recalc.acl_record r ON r.id = p_record
        JOIN recalc.acl_share s ON s.rid = r.rid OR s.rid = r.access_root
        JOIN recalc.acl_member m ON m.gid = s.gid AND m.uid = u.uid AND (s.boss_ok OR NOT m.boss)
        WHERE u.id = p_user
        UNION ALL
        SELECT CASE WHEN u.internal THEN o.internal_level ELSE o.external_level END
        FROM recalc.acl_user u
        JOIN recalc.acl_record r ON r.id = p_record
        JOIN recalc.acl_record root ON root.rid = r.access_root
        JOIN recalc.acl_object o ON o.name = root.object
        WHERE u.id = p_user
    ) levels
$$;

# Writes the step JSON files of queue_ext_limits_h7. Number literals in the criteria part are
# kept verbatim (1e3, -0, 5e-324, ...), so that part is raw JSON text, not json.dumps output.
import json, os
D = os.path.dirname(os.path.abspath(__file__)) if '__file__' in globals() else '.'
def j(x): return json.dumps(x)

crit_records_raw = [
 '{"object": "crit__c", "id": "x01", "owner": "n", "fields": {"num": 1000, "s": " a"}}',
 '{"object": "crit__c", "id": "x02", "owner": "n", "fields": {"num": 1e3, "s": "a"}}',
 '{"object": "crit__c", "id": "x03", "owner": "n", "fields": {"num": "1000", "s": "xa,by"}}',
 '{"object": "crit__c", "id": "x04", "owner": "n", "fields": {"num": -0, "s": ""}}',
 '{"object": "crit__c", "id": "x05", "owner": "n", "fields": {"num": 0, "s": "q"}}',
 '{"object": "crit__c", "id": "x06", "owner": "n", "fields": {"num": 100000000000000000001, "s": "b"}}',
 '{"object": "crit__c", "id": "x07", "owner": "n", "fields": {"num": 1e20}}',
 '{"object": "crit__c", "id": "x08", "owner": "n", "fields": {"num": 5e-324, "s": null}}',
 '{"object": "crit__c", "id": "x09", "owner": "n", "fields": {"num": 1, "s": 7}}',
 '{"object": "crit__c", "id": "x10", "owner": "n", "fields": {}}',
 '{"object": "crit__c", "id": "x11", "owner": "n", "fields": {"num": -5, "s": "a"}}',
 '{"object": "crit__c", "id": "x12", "owner": "n", "fields": {"num": 999.9999999999999, "s": " b"}}',
]
def crule(i, conds, logic=None):
    s = '{"id": "C%02d", "object": "crit__c", "type": "criteria", "target": "user:t%02d", "access": "read", "criteria": {"conditions": [%s]' % (i, i, ", ".join(conds))
    if logic is not None: s += ', "logic": %s' % j(logic)
    return s + "}}"
def c(f, op, v): return '{"field": "%s", "op": "%s", "value": %s}' % (f, op, v)
crit_rules_raw = [
 crule(1, [c("num", "equals", "1e3")]),
 crule(2, [c("num", "equals", "-0")]),
 crule(3, [c("num", "not_equals", "0")]),
 crule(4, [c("num", "equals", "100000000000000000000")]),
 crule(5, [c("s", "equals", '" a"')]),
 crule(6, [c("s", "contains", '""')]),
 crule(7, [c("s", "not_contains", '""')]),
 crule(8, [c("s", "contains", '"a,b"')]),
 crule(9, [c("num", "ge", "1e3"), c("s", "equals", '"q"')], "1 aNd NoT 2"),
 crule(10, [c("num", "gt", "-1"), c("s", "starts_with", '""')], "\t \n"),
 crule(11, [c("num", "lt", "1e3"), c("s", "equals", '"b, a"')], "(1 OR 1) AND NOT (NOT 2)"),
 crule(12, [c("num", "gt", "-0"), c("num", "lt", "1e-300")]),
]
def fillers(ncrit_extra, nowner, extra_owner=0):
    out = []
    for i in range(13, 13 + ncrit_extra):
        out.append('{"id": "F%02d", "object": "crit__c", "type": "criteria", "target": "user:t07", "access": "edit", "criteria": {"conditions": [{"field": "zz", "op": "equals", "value": "never"}]}}' % i)
    for i in range(1, nowner + extra_owner + 1):
        if i == 250:
            out.append('{"id": "O250", "object": "crit__c", "type": "owner", "source": "all_internal_users", "target": "user:t07", "access": "read"}')
        else:
            out.append('{"id": "O%03d", "object": "crit__c", "type": "owner", "source": "role:empty", "target": "user:t07", "access": "edit"}' % i)
    return out

objects0 = [
 {"name": "account", "internal_owd": "private", "external_owd": "private"},
 {"name": "opportunity", "parent": "account", "internal_owd": "private"},
 {"name": "case", "parent": "account", "internal_owd": "private", "external_owd": "private"},
 {"name": "deal__c", "internal_owd": "private", "hierarchy": False},
 {"name": "crit__c", "internal_owd": "private", "external_owd": "private", "hierarchy": False},
]
objects1 = [
 {"name": "account", "internal_owd": "public_read_only", "external_owd": "private"},
 {"name": "opportunity", "parent": "account", "internal_owd": "public_read_write", "external_owd": "private"},
 {"name": "case", "parent": "account", "internal_owd": "private", "external_owd": "private"},
 {"name": "deal__c", "internal_owd": "private", "hierarchy": True},
 {"name": "crit__c", "internal_owd": "private", "external_owd": "private", "hierarchy": False},
]
roles0 = [{"id": "ceo"}, {"id": "mgr", "parent": "ceo", "opportunity_access": "read", "case_access": "edit"},
          {"id": "rep", "parent": "mgr", "opportunity_access": "edit"}, {"id": "empty"}]
roles7 = roles0 + [{"id": "sales", "opportunity_access": "edit"}]
tusers = [{"id": "t%02d" % i, "type": "external"} for i in range(1, 13)]
users0 = [{"id": "c", "role": "ceo"}, {"id": "Xb", "role": "ceo", "type": "external"}, {"id": "m", "role": "mgr"},
          {"id": "r", "role": "rep"}, {"id": "p", "role": "rep", "type": "external"}, {"id": "z", "role": "rep"},
          {"id": "n"}] + tusers
users5 = [{"id": "c", "role": "ceo"}, {"id": "Xb", "role": "ceo", "type": "internal"}, {"id": "m", "role": "mgr"},
          {"id": "r", "role": "rep", "active": False}, {"id": "p", "role": "rep", "type": "external"}, {"id": "z", "role": "rep"},
          {"id": "n"}] + tusers
users7 = users5 + [{"id": "sales", "role": "sales"}]
groups0 = [{"id": "q", "queue": True, "include_bosses": False, "members": ["user:r", "user:p"]},
           {"id": "gw", "members": ["group:q"]}]
groups7 = groups0 + [{"id": "sales", "members": ["user:p"]}]
groups8 = groups0 + [{"id": "sales", "queue": True, "members": ["user:p"]}]
territories7 = [{"id": "sales", "users": ["z"], "account_access": "edit"}]

def recs(a1owner="r", d2owner="n_unused", step=0):
    r = [
     {"object": "account", "id": "a1", "owner": a1owner, "fields": {}},
     {"object": "account", "id": "a2", "owner": "q", "fields": {}},
     {"object": "account", "id": "a3", "owner": "p", "fields": {}},
     {"object": "account", "id": "a4", "owner": "n", "fields": {}},
     {"object": "opportunity", "id": "o1", "owner": "n", "parent": "a1", "fields": {}},
     {"object": "opportunity", "id": "o2", "owner": "n", "parent": "a2", "fields": {}},
     {"object": "opportunity", "id": "o3", "owner": "n", "parent": "a3", "fields": {}},
     {"object": "case", "id": "e2", "owner": "z", "parent": "a2", "fields": {}},
     {"object": "deal__c", "id": "d1", "owner": "q", "fields": {}},
     {"object": "deal__c", "id": "d2", "owner": d2owner, "fields": {}},
    ]
    if step >= 6:
        r.append({"object": "case", "id": "e3", "owner": "n", "parent": "a3", "fields": {}})
    if step >= 7:
        r.append({"object": "account", "id": "a5", "owner": "sales", "territories": ["sales"], "fields": {}})
        r.append({"object": "opportunity", "id": "o5", "owner": "n", "parent": "a5", "fields": {}})
    return "[" + ", ".join([j(x) for x in r] + crit_records_raw) + "]"

RQ0 = {"id": "RQ", "object": "account", "type": "owner", "source": "group:q", "target": "user:n", "access": "read", "opportunity_access": "edit"}
RQ2 = {"id": "RQ", "object": "account", "type": "owner", "source": "group:gw", "target": "group:q", "access": "edit", "case_access": "read"}
RI = {"id": "RI", "object": "account", "type": "owner", "source": "all_internal_users", "target": "role_and_internal_subordinates:mgr", "access": "edit"}
RN = {"id": "RN", "object": "deal__c", "type": "owner", "source": "role:rep", "target": "all_internal_users", "access": "read"}
RS = {"id": "sales", "object": "account", "type": "owner", "source": "role:sales", "target": "group:sales", "access": "read"}
def rules(std, ncrit_extra=0, nowner=0, extra_owner=0):
    return "[" + ", ".join([j(x) for x in std] + crit_rules_raw + fillers(ncrit_extra, nowner, extra_owner)) + "]"

S1 = {"object": "deal__c", "record": "d2", "grantee": "group:q", "access": "read", "cause": "manual"}
S2 = {"object": "account", "record": "a4", "grantee": "group:gw", "access": "read", "cause": "manual"}
S3 = {"object": "deal__c", "record": "d2", "grantee": "user:m", "access": "edit", "cause": "apex:keep"}
S4 = {"object": "deal__c", "record": "d2", "grantee": "user:z", "access": "edit", "cause": "manual"}
S4b = dict(S4, access="read")
S5 = {"object": "deal__c", "record": "d2", "grantee": "user:p", "access": "edit", "cause": "manual"}

def write(n, parts):
    body = "{\n" + ",\n".join('"%s": %s' % (k, v if isinstance(v, str) else j(v)) for k, v in parts) + "\n}\n"
    json.loads(body)  # must at least be JSON
    open(os.path.join(D, "steps", "%02d.json" % n), "w").write(body)

write(0, [("version", "1"), ("objects", objects0), ("roles", roles0), ("users", users0), ("groups", groups0),
          ("records", recs("r", "r")), ("rules", rules([RQ0, RI])), ("shares", [S1, S2, S3, S4])])
write(1, [("objects", objects1)])
write(2, [("rules", rules([RQ2, RI, RN], 38, 250))])
write(3, [("rules", rules([RQ2, RI, RN], 38, 250, 1))])   # 301 rules on crit__c
write(4, [("rules", rules([RQ2, RI, RN], 39, 249))])      # 51 criteria rules on crit__c (300 in all)
write(5, [("users", users5)])
write(6, [("records", recs("m", "n", 6)), ("shares", [S1, S2, S3, S4b, S5])])
write(7, [("roles", roles7), ("users", users7), ("groups", groups7), ("territories", territories7),
          ("records", recs("m", "n", 7)), ("rules", rules([RQ2, RI, RN, RS], 38, 250))])
write(8, [("groups", groups8)])

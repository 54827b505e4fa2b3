# Writes the step JSON files of model_changes_h8 (each step file holds only the sections it
# changes; an absent section is left alone by `recalc import`).
import copy, json, os
D = os.path.dirname(os.path.abspath(__file__))

def obj(name, i, e="private", parent=None, hierarchy=None):
    o = {"name": name}
    if parent: o["parent"] = parent
    o["internal_owd"] = i; o["external_owd"] = e
    if hierarchy is not None: o["hierarchy"] = hierarchy
    return o

def objects(opp_i="private", case_cbp=False, memo_cbp=False):
    cbp = "controlled_by_parent"
    return [
        obj("account", "private"),
        obj("opportunity", opp_i, parent="account"),
        obj("case", cbp, cbp, parent="account") if case_cbp else obj("case", "private", parent="account"),
        obj("deal__c", "private"),
        obj("memo__c", cbp, cbp, parent="deal__c", hierarchy=False) if memo_cbp
        else obj("memo__c", "private", parent="deal__c", hierarchy=False),
        obj("proj__c", "private", hierarchy=False),
    ]

def roles(rep_parent="mgr"):
    return [{"id": "ceo"}, {"id": "mgr", "parent": "ceo", "opportunity_access": "read"},
            {"id": "rep", "parent": rep_parent, "case_access": "edit"}, {"id": "ops"}]

def users(s_role="rep", p_type="external", x_type="internal", z_active=False):
    return [{"id": "c", "role": "ceo"}, {"id": "m", "role": "mgr"}, {"id": "r", "role": "rep"},
            {"id": "s", "role": s_role}, {"id": "p", "role": "rep", "type": p_type},
            {"id": "x", "type": x_type}, {"id": "y", "role": "ops"},
            {"id": "z", "role": "rep", "active": z_active}]

def groups(g=("role:rep",), h=("user:y",)):
    return [{"id": "g", "members": list(g), "include_bosses": False},
            {"id": "h", "members": list(h), "include_bosses": True},
            {"id": "q", "queue": True, "members": ["user:x", "user:s"], "include_bosses": True}]

def territories(t1_users=("y",), t2_parent="T1", t2_access=("edit", None)):
    t2 = {"id": "T2", "users": ["x"], "account_access": t2_access[0]}
    if t2_parent: t2["parent"] = t2_parent
    if t2_access[1]: t2["opportunity_access"] = t2_access[1]
    return [{"id": "T1", "users": list(t1_users), "account_access": "read", "opportunity_access": "edit"}, t2]

def rec(o, i, owner, parent=None, terr=None, fields=None):
    r = {"object": o, "id": i, "owner": owner}
    if parent: r["parent"] = parent
    if terr is not None: r["territories"] = terr
    r["fields"] = fields or {}
    return r

def share(o, r, g, a, c): return {"object": o, "record": r, "grantee": g, "access": a, "cause": c}

R0 = {
    "a1": rec("account", "a1", "r", terr=["T2"]),
    "a2": rec("account", "a2", "x"),
    "o1": rec("opportunity", "o1", "s", "a1"),
    "o2": rec("opportunity", "o2", "x", "a2"),
    "e1": rec("case", "e1", "x", "a1"),
    "d1": rec("deal__c", "d1", "r", fields={"stage": "open"}),
    "d2": rec("deal__c", "d2", "s", fields={"stage": "won"}),
    "n1": rec("memo__c", "n1", "x", "d1"),
}
def records(**changes):
    global R
    R = copy.deepcopy(R)
    for k, v in changes.items(): R[k] = v
    return list(R.values())
R = R0

RA0 = {"id": "RA", "object": "account", "type": "owner", "source": "group:g", "target": "group:h",
       "access": "read", "opportunity_access": "edit"}
RD0 = {"id": "RD", "object": "deal__c", "type": "criteria", "target": "user:y", "access": "edit",
       "criteria": {"conditions": [{"field": "stage", "op": "equals", "value": "won"}]}}
RA2 = {"id": "RA", "object": "opportunity", "type": "owner", "source": "group:g", "target": "group:h", "access": "edit"}
RB2 = dict(RA0, id="RB")
RD2 = {"id": "RD", "object": "deal__c", "type": "owner", "source": "role:rep", "target": "user:p", "access": "read"}
RE2 = dict(RD2, id="RE")

S1 = share("deal__c", "d1", "user:x", "edit", "manual")
S2 = share("deal__c", "d1", "user:x", "read", "apex:sync")
S3 = share("deal__c", "d1", "group:h", "read", "manual")
S4 = share("opportunity", "o1", "user:p", "read", "manual")
S5 = share("deal__c", "d2", "user:x", "read", "apex:a")
S6 = share("deal__c", "d2", "user:x", "edit", "apex:b")
S7 = share("deal__c", "d1", "user:y", "edit", "manual")
S8 = share("case", "e1", "user:s", "read", "manual")
S4b = share("opportunity", "o2", "user:p", "read", "manual")
TM1 = {"record": "a2", "user": "y", "access": "edit", "opportunity_access": "read"}
TM2 = {"record": "e1", "user": "x", "access": "edit"}

steps = {}
steps["00"] = {"version": 1, "objects": objects(), "roles": roles(), "users": users(), "groups": groups(),
               "territories": territories(), "records": list(R0.values()), "rules": [RA0, RD0],
               "shares": [S1, S2, S3, S4, S5, S6, S8], "teams": [TM1]}
steps["01"] = {"records": records(d1=rec("deal__c", "d1", "s", fields={"stage": "open"}),
                                  o1=rec("opportunity", "o1", "s", "a2"),
                                  e1=rec("case", "e1", "p", "a1")),
               "shares": [S1, S2, S3, S4, S5, S6, S7, S8]}
steps["02"] = {"rules": [RA2, RB2, RD2, RE2]}
steps["03"] = {"rules": [RA2, RB2, RE2], "groups": groups(g=("user:r", "role:mgr")), "users": users(s_role="ops")}
steps["04"] = {"objects": objects(case_cbp=True, memo_cbp=True)}
p = lambda s: dict(s, object="proj__c")
steps["05"] = {"records": records(d1=rec("proj__c", "d1", "s", fields={"stage": "open"}),
                                  n1=rec("memo__c", "n1", "x", "d2"),
                                  o1=rec("opportunity", "o1", "r", "a1"),
                                  o2=rec("opportunity", "o2", "q", "a2")),
               "shares": [p(S2), S4, S4b, S5, S6, p(S7)]}
R05 = R
steps["06"] = {"records": records(d1=rec("proj__c", "d1", "y", fields={"stage": "open"}),
                                  d2=rec("deal__c", "d2", "r", fields={"stage": "won"}),
                                  a1=rec("account", "a1", "r", terr=["T9"]))}
R = R05
steps["07"] = {"records": records(d1=rec("deal__c", "d1", "y", fields={"stage": "open"}),
                                  n1=rec("memo__c", "n1", "x", "d1")),
               "shares": [S2, S4b, S5, S6, S7]}
steps["08"] = {"objects": objects(opp_i="public_read_only", case_cbp=True, memo_cbp=True),
               "users": users(s_role="ops", p_type="internal", x_type="external", z_active=True),
               "groups": groups(g=("user:r", "role:mgr"), h=("user:y", "role_and_internal_subordinates:mgr")),
               "territories": territories(t2_parent=None, t2_access=("read", "read"))}
steps["09"] = {"objects": objects(opp_i="public_read_only")}
steps["10"] = {"territories": territories(t1_users=("s",), t2_access=("read", "read")),
               "records": records(a1=rec("account", "a1", "r", terr=["T1"]),
                                  a2=rec("account", "a2", "x", terr=["T2"]),
                                  e1=rec("case", "e1", "z", "a1")),
               "teams": [TM1, TM2]}
steps["11"] = {"roles": roles(rep_parent="ops")}
steps["12"] = {"records": records(o2=rec("opportunity", "o2", "m", "a2"),
                                  d2=rec("deal__c", "d2", "r", fields={"stage": "won"}),
                                  n1=rec("deal__c", "n1", "x"))}
for k, v in steps.items():
    with open(os.path.join(D, "steps", k + ".json"), "w") as f:
        json.dump(v, f); f.write("\n")

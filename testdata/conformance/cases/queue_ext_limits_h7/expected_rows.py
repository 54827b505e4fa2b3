# Hand-derived rows: "object record user:level user:level ...". Only sorting/formatting here.
import sys
CRIT = """
crit__c x01 n:all t01:read t03:read t05:read t06:read t09:read t10:read
crit__c x02 n:all t01:read t03:read t06:read t09:read t10:read
crit__c x03 n:all t06:read t08:read
crit__c x04 n:all t02:read t06:read t10:read
crit__c x05 n:all t02:read t06:read t10:read
crit__c x06 n:all t03:read t04:read t06:read t09:read t10:read
crit__c x07 n:all t03:read t04:read t09:read
crit__c x08 n:all t03:read t12:read
crit__c x09 n:all t03:read
crit__c x10 n:all
crit__c x11 n:all t03:read t06:read t11:read
crit__c x12 n:all t03:read t06:read t10:read
"""
def crit(t07):
    return "\n".join(l + (" t07:read" if t07 else "") for l in CRIT.strip().splitlines())
S = {}
S["00"] = """
account a1 Xb:all c:all m:all n:read r:all z:edit
account a2 Xb:read c:read m:read n:read p:all r:all z:read
account a3 Xb:all c:all m:all n:read p:all
account a4 Xb:edit c:edit m:edit n:all p:read r:edit z:edit
case e2 Xb:all c:all m:all z:all
deal__c d1 p:all r:all
deal__c d2 m:edit p:read r:all z:edit
opportunity o1 Xb:edit c:edit m:edit n:all r:edit
opportunity o2 n:all
opportunity o3 Xb:edit c:edit m:edit n:all p:edit
""" + crit(False)
S["01"] = """
account a1 Xb:all c:all m:all n:read r:all z:edit
account a2 Xb:read c:read m:read n:read p:all r:all z:read
account a3 Xb:all c:all m:all n:read p:all r:read z:read
account a4 Xb:edit c:edit m:edit n:all p:read r:edit z:edit
case e2 Xb:all c:all m:all z:all
deal__c d1 p:all r:all
deal__c d2 Xb:all c:all m:all p:read r:all z:edit
opportunity o1 Xb:edit c:edit m:edit n:all r:edit z:edit
opportunity o2 c:edit m:edit n:all r:edit z:edit
opportunity o3 Xb:edit c:edit m:edit n:all p:edit r:edit z:edit
""" + crit(False)
S["02"] = """
account a1 Xb:all c:all m:all n:read p:edit r:all z:edit
account a2 Xb:read c:read m:read n:read p:all r:all z:read
account a3 Xb:all c:all m:all n:read p:all r:edit z:read
account a4 Xb:edit c:edit m:edit n:all p:read r:edit z:edit
case e2 Xb:all c:all m:all z:all
deal__c d1 p:all r:all
deal__c d2 Xb:all c:all m:all n:read p:read r:all z:edit
opportunity o1 Xb:edit c:edit m:edit n:all r:edit z:edit
opportunity o2 c:edit m:edit n:all r:edit z:edit
opportunity o3 Xb:edit c:edit m:edit n:all p:edit r:edit z:edit
""" + crit(True)
S["05"] = """
account a1 Xb:all c:all m:all n:read p:edit z:edit
account a2 Xb:read c:read m:read n:read p:all z:read
account a3 Xb:all c:all m:all n:read p:all z:read
account a4 Xb:edit c:edit m:edit n:all p:read z:edit
case e2 Xb:all c:all m:all z:all
deal__c d1 p:all
deal__c d2 Xb:all c:all m:all n:read p:read z:edit
opportunity o1 Xb:edit c:edit m:edit n:all z:edit
opportunity o2 Xb:edit c:edit m:edit n:all z:edit
opportunity o3 Xb:edit c:edit m:edit n:all p:edit z:edit
""" + crit(True)
S["06"] = """
account a1 Xb:all c:all m:all n:read z:edit
account a2 Xb:read c:read m:read n:read p:all z:read
account a3 Xb:all c:all m:all n:read p:all z:read
account a4 Xb:edit c:edit m:edit n:all p:read z:edit
case e2 Xb:all c:all m:all z:all
case e3 n:all p:read
deal__c d1 p:all
deal__c d2 Xb:edit c:edit m:edit n:all p:edit
opportunity o1 Xb:edit c:edit m:edit n:all z:edit
opportunity o2 Xb:edit c:edit m:edit n:all z:edit
opportunity o3 Xb:edit c:edit m:edit n:all p:edit z:edit
""" + crit(True)
S["07"] = """
account a1 Xb:all c:all m:all n:read sales:read z:edit
account a2 Xb:read c:read m:read n:read p:all sales:read z:read
account a3 Xb:all c:all m:all n:read p:all sales:read z:read
account a4 Xb:edit c:edit m:edit n:all p:read sales:read z:edit
account a5 Xb:edit c:edit m:edit n:read p:read sales:all z:edit
case e2 Xb:all c:all m:all z:all
case e3 n:all p:read
deal__c d1 p:all
deal__c d2 Xb:edit c:edit m:edit n:all p:edit
opportunity o1 Xb:edit c:edit m:edit n:all sales:edit z:edit
opportunity o2 Xb:edit c:edit m:edit n:all sales:edit z:edit
opportunity o3 Xb:edit c:edit m:edit n:all p:edit sales:edit z:edit
opportunity o5 Xb:edit c:edit m:edit n:all sales:edit z:edit
""" + crit(True)
for k, v in S.items():
    rows = []
    for l in v.strip().splitlines():
        o, rec, *ul = l.split()
        users = [u.split(":") for u in ul]
        assert len({u for u, _ in users}) == len(users), l
        for u, lv in users:
            assert lv in ("read", "edit", "all"), l
            rows.append((o, rec, u, lv))
    rows.sort(key=lambda x: (x[0].encode(), x[1].encode(), x[2].encode()))
    open("steps/%s.csv" % k, "w").write("object,record,user,access\n" + "".join(",".join(r) + "\n" for r in rows))

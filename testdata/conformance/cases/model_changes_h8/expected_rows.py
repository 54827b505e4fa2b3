# Hand-derived rows (README.md gives the reason for each): "object record user:level ...".
# This script only sorts them and writes steps/NN.csv.
import os
D = os.path.dirname(os.path.abspath(__file__))
S = {}
S["00"] = """
account a1 c:all m:all p:read r:all s:read x:edit y:edit
account a2 x:all y:edit
case e1 c:edit m:edit r:edit s:read x:all
deal__c d1 c:all m:all r:all x:edit y:read
deal__c d2 c:all m:all s:all x:edit y:edit
memo__c n1 x:all
opportunity o1 c:all m:all p:read s:all y:edit
opportunity o2 x:all y:read
"""
S["01"] = """
account a1 c:all m:all p:read r:all x:edit y:edit
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all p:all r:edit
deal__c d1 c:all m:all s:all x:read y:edit
deal__c d2 c:all m:all s:all x:edit y:edit
memo__c n1 x:all
opportunity o1 c:all m:all p:read s:all y:read
opportunity o2 x:all y:read
"""
S["02"] = """
account a1 c:all m:all p:read r:all x:edit y:edit
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all p:all r:edit
deal__c d1 c:all m:all p:read s:all x:read y:edit
deal__c d2 c:all m:all p:read s:all x:edit
memo__c n1 x:all
opportunity o1 c:all m:all p:read s:all y:edit
opportunity o2 x:all y:read
"""
S["03"] = """
account a1 c:all m:all p:read r:all x:edit y:edit
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all p:all r:edit
deal__c d1 s:all x:read y:edit
deal__c d2 s:all x:edit
memo__c n1 x:all
opportunity o1 c:read m:read p:read s:all y:read
opportunity o2 x:all y:read
"""
S["04"] = """
account a1 c:all m:all r:all x:edit y:edit
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all p:all r:all x:edit y:edit
deal__c d1 s:all x:read y:edit
deal__c d2 s:all x:edit
memo__c n1 s:all x:all y:edit
opportunity o1 c:read m:read p:read s:all y:read
opportunity o2 x:all y:read
"""
S["05"] = """
account a1 c:all m:all r:all x:edit y:edit
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all p:all r:all x:edit y:edit
deal__c d2 s:all x:edit
memo__c n1 s:all x:all
opportunity o1 c:all m:all r:all y:edit
opportunity o2 c:read m:read p:read s:all x:all y:read
proj__c d1 s:all x:read y:edit
"""
S["07"] = """
account a1 c:all m:all r:all x:edit y:edit
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all p:all r:all x:edit y:edit
deal__c d1 x:read y:all
deal__c d2 s:all x:edit
memo__c n1 x:all y:all
opportunity o1 c:all m:all r:all y:edit
opportunity o2 c:read m:read p:read s:all x:all y:read
"""
S["08"] = """
account a1 c:all m:all p:read r:all x:read y:read z:read
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all p:all r:all x:read y:read z:read
deal__c d1 x:read y:all
deal__c d2 s:all x:edit
memo__c n1 x:all y:all
opportunity o1 c:all m:all p:edit r:all s:read x:read y:edit z:edit
opportunity o2 c:read m:read p:read r:read s:all x:all y:read z:read
"""
S["09"] = """
account a1 c:all m:all p:read r:all x:read y:read z:read
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all p:all r:edit
deal__c d1 x:read y:all
deal__c d2 s:all x:edit
memo__c n1 x:all
opportunity o1 c:all m:all p:edit r:all s:read x:read y:edit z:edit
opportunity o2 c:read m:read p:read r:read s:all x:all y:read z:read
"""
S["10"] = """
account a1 c:all m:all p:read r:all s:read x:read y:read z:read
account a2 c:read m:read p:read s:read x:all y:edit
case e1 c:all m:all r:edit x:edit z:all
deal__c d1 x:read y:all
deal__c d2 s:all x:edit
memo__c n1 x:all
opportunity o1 c:all m:all p:edit r:all s:edit y:edit z:edit
opportunity o2 c:read m:read p:read r:read s:all x:all y:read z:read
"""
S["11"] = """
account a1 c:read m:read r:all s:all x:read y:all z:read
account a2 p:read s:read x:all y:edit
case e1 r:edit s:all x:edit y:all z:all
deal__c d1 x:read y:all
deal__c d2 s:all x:edit
memo__c n1 x:all
opportunity o1 c:edit m:edit p:read r:all s:all y:all z:read
opportunity o2 c:read m:read p:read r:read s:all x:all y:read z:read
"""
S["12"] = """
account a1 c:read m:read r:all s:all x:read y:all z:read
account a2 c:read m:read s:read x:all y:edit
case e1 r:edit s:all x:edit y:all z:all
deal__c d1 x:read y:all
deal__c d2 p:read r:all s:all x:edit y:all
deal__c n1 x:all
opportunity o1 c:edit m:edit p:read r:all s:all y:all z:read
opportunity o2 c:all m:all p:read r:read s:read x:read y:edit z:read
"""
for k, text in S.items():
    rows = []
    for line in text.strip().splitlines():
        o, r, *ul = line.split()
        for u in ul:
            user, lvl = u.split(":")
            rows.append((o, r, user, lvl))
    rows.sort(key=lambda t: tuple(x.encode() for x in t[:3]))
    with open(os.path.join(D, "steps", k + ".csv"), "w") as f:
        f.write("object,record,user,access\n")
        for t in rows: f.write(",".join(t) + "\n")

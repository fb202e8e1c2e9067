import t from "tap";
import { ENI_LIMITS_TABLE } from "../../../src/config/eni-limits.js";
import { eniLimits } from "../../../src/config/max-pods.js";

t.test("eniLimits: nodeadm's figures for one type, found among the rows of its size", async (t) => {
  t.same(eniLimits("c6in.4xlarge"), { enis: 8, ipv4PerEni: 30 });
  t.same(eniLimits("t3.large"), { enis: 3, ipv4PerEni: 12 });
  t.same(eniLimits("c6in.24xlarge"), { enis: 15, ipv4PerEni: 50 });
  t.equal(eniLimits("c6.4xlarge"), undefined, "a family only a prefix of listed ones is not one");
  t.equal(eniLimits("zz9.4xlarge"), undefined, "a type nodeadm does not list");
  t.equal(eniLimits("c6in"), undefined, "no size");
  t.equal(eniLimits(".4xlarge"), undefined, "no family");
});

t.test(
  "every row of the generated table reads, no type is listed twice, each is found",
  async (t) => {
    const bad: string[] = [];
    const twice: string[] = [];
    const wrong: string[] = [];
    const seen = new Set<string>();
    for (const row of ENI_LIMITS_TABLE) {
      const m = /^(\d+)\/(\d+) (\S+): (.+)$/.exec(row);
      if (!m) {
        bad.push(row);
        continue;
      }
      for (const family of m[4].split(" ")) {
        const type = `${family}.${m[3]}`;
        if (seen.has(type)) twice.push(type);
        seen.add(type);
        const got = eniLimits(type);
        if (got?.enis !== Number(m[1]) || got.ipv4PerEni !== Number(m[2])) wrong.push(type);
      }
    }
    t.same(bad, [], "every row reads");
    t.same(twice, [], "no type twice");
    t.same(wrong, [], "each type's own figures");
    t.equal(seen.size, 1384, "the 1384 types the generator says it wrote");
  },
);

// yargs' string-width in the bundle (scripts/vendor/string-width-ascii.cjs): printable ASCII is
// answered as its length without loading the real module, and every other text gets the real
// module's answer. Checked against each copy of string-width that node_modules holds.
import t from "tap";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { REPO } from "../support/repo.js";

interface Options {
  ambiguousIsNarrow?: boolean;
  countAnsiEscapeCodes?: boolean;
}
type StringWidth = (text: unknown, options?: Options) => number;
const asciiFirst = createRequire(import.meta.url)(
  path.join(REPO, "scripts/vendor/string-width-ascii.cjs"),
) as (loadReal: () => StringWidth) => StringWidth;

// the copies yargs bundles (cliui's and wrap-ansi's), and the top-level one where there is one
const COPIES = [
  "node_modules/cliui/node_modules/string-width",
  "node_modules/wrap-ansi/node_modules/string-width",
  "node_modules/string-width",
].filter((d) => existsSync(path.join(REPO, d, "package.json")));

const ASCII = [
  "",
  " ",
  "--log-level",
  '[choices: "debug", "info", "warn", "error"] [default: "info"]',
  "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
  "x".repeat(500),
];
const OTHER = [
  "tab\there",
  "line\nbreak",
  "\x1b[31mred\x1b[39m",
  "\x7f",
  "café",
  "e\u0301",
  "漢字",
  "ｱｲｳ",
  "👍🏽",
  "👨‍👩‍👧",
  "zero\u200bwidth",
  "±§",
  "\u00a0",
];

t.ok(COPIES.length >= 2, `string-width copies found: ${COPIES.join(", ")}`);

for (const copy of COPIES) {
  t.test(copy, async (t) => {
    const real = (await import(pathToFileURL(path.join(REPO, copy, "index.js")).href))
      .default as StringWidth;
    let loads = 0;
    const width = asciiFirst(() => (loads++, real));
    for (const s of ASCII) t.equal(width(s), real(s), `${JSON.stringify(s)}: ${real(s)}`);
    t.equal(loads, 0, "printable ASCII never loads the real module");
    const variants: (Options | undefined)[] = [
      undefined,
      { ambiguousIsNarrow: false },
      { countAnsiEscapeCodes: true },
    ];
    for (const options of variants)
      for (const s of OTHER)
        t.equal(
          width(s, options),
          real(s, options),
          `${JSON.stringify(s)} ${JSON.stringify(options)}: ${real(s, options)}`,
        );
    t.equal(width(undefined), real(undefined), "not a string: the real module's answer");
    t.equal(loads, 1, "the real module is loaded once, on the first other text");
    // a positive control: the two differ where the width is not the length
    t.not(real("漢字"), "漢字".length, "a text whose width is not its length is among them");
  });
}

// Preloaded with --require: at exit, writes how many Intl.Segmenters the process made to the file
// named by SEGMENTER_PROBE_OUT. string-width makes one when it loads (scripts/vendor/).
const fs = require("node:fs");

let made = 0;
const Segmenter = Intl.Segmenter;
Intl.Segmenter = class extends Segmenter {
  constructor(...args) {
    super(...args);
    made++;
  }
};
process.on("exit", () => fs.writeFileSync(process.env.SEGMENTER_PROBE_OUT, String(made)));

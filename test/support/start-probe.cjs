// Preloaded with --require: at exit, writes to the file named by START_PROBE_OUT, as JSON, what the
// process loaded that start-up is judged by: `esm`, the ES module loader's internals it loaded
// (process.moduleLoadList), and `segmenters`, how many Intl.Segmenters it made (string-width makes
// one when it loads, scripts/vendor/).
const fs = require("node:fs");

let segmenters = 0;
const Segmenter = Intl.Segmenter;
Intl.Segmenter = class extends Segmenter {
  constructor(...args) {
    super(...args);
    segmenters++;
  }
};
process.on("exit", () => {
  const esm = process.moduleLoadList.filter((m) => m.includes("internal/modules/esm/"));
  fs.writeFileSync(process.env.START_PROBE_OUT, JSON.stringify({ esm, segmenters }));
});

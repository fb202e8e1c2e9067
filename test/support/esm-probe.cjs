// Preloaded with --require: at exit, writes the ES module loader's internals that the process
// loaded (process.moduleLoadList) to the file named by ESM_PROBE_OUT, one per line.
const fs = require("node:fs");

process.on("exit", () => {
  const esm = process.moduleLoadList.filter((m) => m.includes("internal/modules/esm/"));
  fs.writeFileSync(process.env.ESM_PROBE_OUT, esm.join("\n"));
});

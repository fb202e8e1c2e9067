// string-width as yargs' bundle gets it (scripts/build.mjs): printable ASCII, whose width is its
// length, is answered without loading the real module. Loading it makes an Intl.Segmenter and
// compiles its emoji and Unicode-property regexes, 45 ms of every command on Node 20, and yargs
// lays out its help after every command it runs (cacheHelpMessage), printed or not.
"use strict";

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** string-width's `(text, options) => number`, with `loadReal` called on the first other text. */
module.exports = function asciiFirst(loadReal) {
  let real;
  return (text, options) =>
    typeof text === "string" && PRINTABLE_ASCII.test(text)
      ? text.length
      : (real ??= loadReal())(text, options);
};

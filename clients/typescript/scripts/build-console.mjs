// Builds the web console (console/src) into console/dist/app.js, one bundle. The page
// (console/index.html) and the CSS (console/src/style.css) are embedded as they are.
// The output is committed so `cargo build` embeds it without network access.
// Usage: node scripts/build-console.mjs [OUT_DIR]   (default ../../console/dist)

import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../../console");
const out = resolve(process.argv[2] ?? resolve(root, "dist"));
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [resolve(root, "src/main.ts")],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: false,
  legalComments: "none",
  banner: {
    js: "// Generated from console/src/main.ts and clients/typescript/src by\n" +
      "// clients/typescript/scripts/build-console.mjs (npm run build:console). Do not edit.",
  },
  charset: "utf8",
  outfile: resolve(out, "app.js"),
  logLevel: "warning",
});
console.log(`console built into ${out}`);

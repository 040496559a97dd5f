// Builds the web console (console/src) into console/dist: one bundled app.js, the page and the CSS.
// The output is committed so `cargo build` embeds it without network access.
// Usage: node scripts/build-console.mjs [OUT_DIR]   (default ../../console/dist)

import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
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
  charset: "utf8",
  outfile: resolve(out, "app.js"),
  logLevel: "warning",
});
copyFileSync(resolve(root, "index.html"), resolve(out, "index.html"));
copyFileSync(resolve(root, "src/style.css"), resolve(out, "style.css"));
console.log(`console built into ${out}`);

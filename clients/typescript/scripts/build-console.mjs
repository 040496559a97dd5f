// Builds the web console and the admin page (console/src) into console/dist/app.js and
// console/dist/admin.js. The pages (console/index.html, console/admin/index.html) and the CSS
// (console/src/style.css, console/admin/admin.css) are embedded as they are.
// The output is committed so `cargo build` embeds it without network access.
// Usage: node scripts/build-console.mjs [OUT_DIR]   (default ../../console/dist)

import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../../console");
const out = resolve(process.argv[2] ?? resolve(root, "dist"));
mkdirSync(out, { recursive: true });

// The console and the admin page: one bundle each.
for (const [entry, bundle] of [["main.ts", "app.js"], ["admin.ts", "admin.js"]]) {
  await build({
    entryPoints: [resolve(root, "src", entry)],
    bundle: true,
    format: "esm",
    target: "es2020",
    minify: false,
    legalComments: "none",
    banner: {
      js: `// Generated from console/src/${entry} and clients/typescript/src by\n` +
        "// clients/typescript/scripts/build-console.mjs (npm run build:console). Do not edit.",
    },
    charset: "utf8",
    outfile: resolve(out, bundle),
    logLevel: "warning",
  });
}
console.log(`console built into ${out}`);

// Builds examples/ai-sdk-chat/app.ts (the AI SDK's chat + herald-ws/ai-sdk) into one script,
// examples/ai-sdk-chat/app.js, committed so the page runs from a static file server.
// Usage: node scripts/build-example.mjs [OUT_DIR]   (default ../../examples/ai-sdk-chat)

import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../../examples/ai-sdk-chat");
const out = resolve(process.argv[2] ?? root);
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [resolve(root, "app.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  // `ai` and its dependencies resolve from clients/typescript/node_modules.
  nodePaths: [resolve(here, "../node_modules")],
  banner: { js: "// Generated from examples/ai-sdk-chat/app.ts by clients/typescript/scripts/build-example.mjs. Do not edit." },
  charset: "utf8",
  outfile: resolve(out, "app.js"),
  logLevel: "warning",
});
console.log(`example built into ${out}`);

// Bundle the pages (annotate, explore, photo, verify) with esbuild into dist/ (served by `kpengine serve`); no CDN at run time.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist/assets", { recursive: true });
await build({
  entryPoints: { annotate: "src/annotate.ts", explore: "src/explore.ts", photo: "src/photo.ts", verify: "src/verify.ts" },
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  sourcemap: true,
  outdir: "dist/assets",
  logLevel: "warning",
});
for (const f of ["annotate.html", "explore.html", "photo.html", "verify.html"]) copyFileSync(`src/${f}`, `dist/${f}`);
copyFileSync("src/style.css", "dist/assets/style.css");
copyFileSync("src/favicon.svg", "dist/assets/favicon.svg");

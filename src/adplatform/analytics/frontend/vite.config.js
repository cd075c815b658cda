// Builds the dashboard into ../static, served by analytics-service at /analytics/static.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/analytics/static/",
  build: {
    outDir: "../static",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
});

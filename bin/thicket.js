#!/usr/bin/env node
// The `thicket` command. npm puts the project's own Node.js 24 first on PATH for npx and npm scripts,
// which runs the TypeScript sources directly.
import('../src/cli/main.ts').then((m) => m.run(process.argv.slice(2)).then((code) => process.exit(code)));

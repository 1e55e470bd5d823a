/**
 * Config is a leaf: everything else reads config, so config reads nothing above it. Its only
 * imports inside src are errors.ts and the tensor datatypes, and those two import nothing but
 * errors.ts. `npm run check:cycles` catches a cycle; this catches the first step up a layer,
 * before anything imports back.
 */

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** src-relative files or folders each layer may import from (its own folder always). */
const ALLOWED: Record<string, readonly string[]> = {
  config: ['errors.ts', 'tensor/index.ts'],
  tensor: ['errors.ts'],
  'errors.ts': [],
};

/** The .ts files of a folder (or the one file), src-relative. */
function filesOf(layer: string): string[] {
  if (layer.endsWith('.ts')) return [layer];
  return readdirSync(join(SRC, layer), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(layer, f));
}

/** The src-relative targets of a file's relative imports and re-exports (type-only included). */
function importsOf(file: string): string[] {
  const text = readFileSync(join(SRC, file), 'utf8');
  const specs = [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)'(\.[^']*)'/g)].map((m) => m[1]!);
  return specs.map((s) => relative(SRC, resolve(SRC, dirname(file), s)));
}

test('config - imports nothing inside src but errors and tensor, which import only errors', () => {
  const problems: string[] = [];
  for (const [layer, allowed] of Object.entries(ALLOWED)) {
    for (const file of filesOf(layer)) {
      for (const target of importsOf(file)) {
        const own = !layer.endsWith('.ts') && target.startsWith(`${layer}/`);
        if (!own && !allowed.includes(target)) problems.push(`${file} imports ${target}`);
      }
    }
  }
  assert.deepEqual(problems, [], 'config may import only errors.ts and tensor/index.ts');
});

test('config - the import scan finds imports (an empty scan would pass the check above)', () => {
  const found = importsOf('config/load.ts');
  assert.ok(found.includes('errors.ts'), `load.ts's imports as scanned: ${found.join(', ')}`);
  assert.ok(found.includes('config/schema.ts'), 'a multi-line import');
});

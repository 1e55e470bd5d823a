/**
 * Reading scenario results that may lack a field: a scenario's JSON lines change as it grows,
 * and the report renders what is there rather than failing on what is not.
 */

import type { BenchLine, ScenarioRun, SuiteFile } from './suite-format.ts';

export type Json = Record<string, unknown>;

export function obj(value: unknown): Json | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : undefined;
}

export function arr(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** The value at `path` inside `value`. */
export function at(value: unknown, ...path: (string | number)[]): unknown {
  let current = value;
  for (const key of path) {
    if (Array.isArray(current) && typeof key === 'number') current = current[key];
    else current = obj(current)?.[String(key)];
  }
  return current;
}

/** A finite number at `path`, else undefined. */
export function num(value: unknown, ...path: (string | number)[]): number | undefined {
  const v = at(value, ...path);
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

export function str(value: unknown, ...path: (string | number)[]): string | undefined {
  const v = at(value, ...path);
  return typeof v === 'string' ? v : undefined;
}

/** The first of several paths that holds a finite number. */
export function firstNum(value: unknown, paths: (string | number)[][]): number | undefined {
  for (const path of paths) {
    const v = num(value, ...path);
    if (v !== undefined) return v;
  }
  return undefined;
}

export function scenario(suite: SuiteFile, name: string): ScenarioRun | undefined {
  return suite.scenarios.find((s) => s.name === name);
}

/** A scenario's lines with the given `bench` name (and, when given, `scenario` field). */
export function lines(run: ScenarioRun | undefined, bench: string, kind?: string): BenchLine[] {
  return (run?.results ?? []).filter((l) => l.bench === bench && (kind === undefined || l.scenario === kind));
}

export function round(v: number, digits = 2): number {
  return Math.round(v * 10 ** digits) / 10 ** digits;
}

/** A number for a table cell: `-` when missing. */
export function cell(v: number | undefined | null, digits = 2): string {
  if (v === undefined || v === null || !Number.isFinite(v)) return '-';
  if (Math.abs(v) >= 1000 && Number.isInteger(Math.round(v))) return Math.round(v).toLocaleString('en-US');
  return String(round(v, digits));
}

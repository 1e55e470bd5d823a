/**
 * A generation request's options, read from its KServe parameters (names in schema.ts) and
 * checked against the model's limits. A bad value is the client's fault (INVALID_ARGUMENT) and
 * says which parameter and what it accepts.
 */

import { InfergridError } from '../errors.ts';
import type { Parameters } from '../protocol/index.ts';
import { LLM_PARAMETERS } from './schema.ts';

export interface SamplingOptions {
  /** 0 samples greedily. */
  temperature: number;
  topP: number;
  /** 0: no top-k cut. */
  topK: number;
  /** The base seed; a step's seed is this plus the sampled position (reproducible, not repeating). */
  seed: number;
  /** 1: off. */
  repeatPenalty: number;
}

export interface GenerationOptions {
  chat: boolean;
  maxTokens: number;
  minTokens: number;
  ignoreEos: boolean;
  stop: string[];
  sampling: SamplingOptions;
}

export interface GenerationLimits {
  /** Largest max_tokens accepted, and the default. */
  maxTokens: number;
}

/** Sampling defaults: OpenAI's (temperature 1, top_p 1), no top-k cut, no repeat penalty. */
const DEFAULT_SAMPLING = { temperature: 1, topP: 1, topK: 0, repeatPenalty: 1 } as const;
/** Most stop strings, and longest one, a request may give (OpenAI allows 4). */
const MAX_STOP_STRINGS = 16;
const MAX_STOP_STRING_CHARS = 256;

function bad(name: string, expected: string, got: unknown): InfergridError {
  return new InfergridError(
    'INVALID_ARGUMENT',
    `parameter "${name}": expected ${expected}, got ${JSON.stringify(got)}`,
  );
}

function num(
  p: Parameters,
  name: string,
  check: (v: number) => boolean,
  expected: string,
): number | undefined {
  const v = p[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw bad(name, expected, v);
  return v;
}

function bool(p: Parameters, name: string): boolean {
  const v = p[name];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw bad(name, 'true or false', v);
  return v;
}

function stops(p: Parameters): string[] {
  const v = p[LLM_PARAMETERS.stop];
  if (v === undefined || v === '') return [];
  if (typeof v !== 'string') throw bad(LLM_PARAMETERS.stop, 'a string or a JSON array of strings', v);
  let list: unknown = [v];
  if (v.startsWith('[')) {
    try {
      list = JSON.parse(v);
    } catch {
      list = [v];
    }
  }
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string'))
    throw bad(LLM_PARAMETERS.stop, 'a string or a JSON array of strings', v);
  const out = (list as string[]).filter((s) => s.length > 0);
  if (out.length > MAX_STOP_STRINGS || out.some((s) => s.length > MAX_STOP_STRING_CHARS))
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `parameter "stop": at most ${MAX_STOP_STRINGS} strings of at most ${MAX_STOP_STRING_CHARS} characters`,
    );
  return out;
}

const isInt = (v: number): boolean => Number.isInteger(v);

export function parseGenerationOptions(
  p: Parameters,
  limits: GenerationLimits,
  randomSeed: () => number,
): GenerationOptions {
  const P = LLM_PARAMETERS;
  const maxTokens = num(p, P.maxTokens, (v) => isInt(v) && v >= 1, 'an integer of 1 or more');
  if (maxTokens !== undefined && maxTokens > limits.maxTokens)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `parameter "max_tokens": ${maxTokens} is above this model's limit of ${limits.maxTokens}`,
    );
  const max = maxTokens ?? limits.maxTokens;
  const minTokens = num(p, P.minTokens, (v) => isInt(v) && v >= 0, 'an integer of 0 or more') ?? 0;
  if (minTokens > max)
    throw new InfergridError(
      'INVALID_ARGUMENT',
      `parameter "min_tokens": ${minTokens} is above max_tokens ${max}`,
    );
  return {
    chat: bool(p, P.chat),
    maxTokens: max,
    minTokens,
    ignoreEos: bool(p, P.ignoreEos),
    stop: stops(p),
    sampling: {
      temperature:
        num(p, P.temperature, (v) => v >= 0 && v <= 2, 'a number from 0 to 2') ??
        DEFAULT_SAMPLING.temperature,
      topP: num(p, P.topP, (v) => v > 0 && v <= 1, 'a number above 0, at most 1') ?? DEFAULT_SAMPLING.topP,
      topK: num(p, P.topK, (v) => isInt(v) && v >= 0, 'an integer of 0 or more') ?? DEFAULT_SAMPLING.topK,
      seed:
        num(p, P.seed, (v) => isInt(v) && v >= 0 && v <= 0xffffffff, 'an integer from 0 to 2^32-1') ??
        randomSeed(),
      repeatPenalty:
        num(p, P.repeatPenalty, (v) => v > 0 && v <= 10, 'a number above 0, at most 10') ??
        DEFAULT_SAMPLING.repeatPenalty,
    },
  };
}

import type { PageScenarios } from '../lib/page.ts';
import type { Scenario } from '../lib/scenario.ts';
import { batching } from './batching.ts';
import { cache } from './cache.ts';
import { compression } from './compression.ts';
import { grpcScenario } from './grpc.ts';
import { llm } from './llm.ts';
import { llmLoads } from './llm-loads.ts';
import { overhead } from './overhead.ts';
import { pipeline } from './pipeline.ts';
import { prefixIndex } from './prefix-index.ts';
import { realModel } from './real-model.ts';
import { routing } from './routing.ts';
import { scaleOut } from './scale-out.ts';
import { security } from './security.ts';

/** Every scenario, in the order the suite runs them. */
export const SCENARIOS: readonly Scenario<unknown>[] = [
  overhead,
  routing,
  batching,
  cache,
  pipeline,
  prefixIndex,
  scaleOut,
  realModel,
  security,
  compression,
  grpcScenario,
  llm,
  llmLoads,
] as readonly Scenario<unknown>[];

/**
 * For the page: its targets in the order the README states them (engine cost, real model,
 * scale-out), then issue 14's (what auth costs), then issue 18's (the OCR pipeline against the
 * same steps in one process).
 */
export const PAGE_SCENARIOS: PageScenarios = {
  all: SCENARIOS,
  targets: [overhead, realModel, scaleOut, security, pipeline] as readonly Scenario<unknown>[],
};

/** Where a scenario's module lives, from the repository root: what the suite runs. */
export const scenarioFile = (name: string): string => `bench/scenarios/${name}.ts`;

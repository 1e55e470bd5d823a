/**
 * Version policy: which declared versions of a model name are served. Workers load only
 * those; the coordinator routes only to those. It is a function of the config alone, so it
 * lives here: config checks a pipeline step's pinned version against it at load. Versions are ordered newest first by
 * compareVersionsDesc (numbers by value, before other labels).
 */

import type { ModelConfig, VersionPolicy } from './schema.ts';
import { compareVersionsDesc } from './version-order.ts';

/** The policy of a model name: the first entry of that name that states one, else "all". */
export function policyOf(models: readonly ModelConfig[], name: string): VersionPolicy {
  for (const m of models) if (m.name === name && m.versionPolicy !== undefined) return m.versionPolicy;
  return 'all';
}

/** The served subset of `versions` under `policy`, newest first. */
export function selectVersions(versions: readonly string[], policy: VersionPolicy): string[] {
  const sorted = [...versions].sort(compareVersionsDesc);
  if (policy === 'all') return sorted;
  if ('latest' in policy) return sorted.slice(0, policy.latest);
  const wanted = new Set(policy.specific);
  return sorted.filter((v) => wanted.has(v));
}

/** Says a policy in words, for messages. */
export function describePolicy(policy: VersionPolicy): string {
  if (policy === 'all') return 'all versions';
  if ('latest' in policy) return `the latest ${policy.latest}`;
  return `versions ${policy.specific.join(', ')}`;
}

/** The model entries the version policies serve, in their declared order. */
export function servedModels(models: readonly ModelConfig[]): ModelConfig[] {
  const served = new Map<string, Set<string>>();
  for (const m of models) {
    if (served.has(m.name)) continue;
    const versions = models.filter((c) => c.name === m.name).map((c) => c.version);
    served.set(m.name, new Set(selectVersions(versions, policyOf(models, m.name))));
  }
  return models.filter((m) => served.get(m.name)!.has(m.version));
}

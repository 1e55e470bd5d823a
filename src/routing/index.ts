export { Balancer } from './balancer.ts';
export { CircuitBreaker, type CircuitBreakerOptions, type CircuitState } from './circuit-breaker.ts';
export { HealthCheck, type HealthThresholds, type WorkerHealth } from './health.ts';
export { LatencyEwma, LatencyWindow } from './latency.ts';
export { hashBytes, hashString, rendezvousOrder, rendezvousScore } from './rendezvous.ts';
export { RetryBudget, type RetryBudgetOptions } from './retry-budget.ts';
export {
  type AttemptOutcome,
  type ReplicaRouteStats,
  type RouteRequest,
  type RoutableWorker,
  Router,
  type RouterOptions,
} from './router.ts';
export {
  type PickState,
  type Random,
  STRATEGIES,
  type StrategyName,
  type WorkerLoad,
  advanceWeights,
  pickByStrategy,
  pickLeastConnections,
  pickLeastLatency,
  pickPowerOfTwo,
  pickRandom,
  pickRoundRobin,
  pickWeighted,
} from './strategies.ts';

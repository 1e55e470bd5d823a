export { RoundRobinRouter, pickRoundRobin } from './round-robin.ts';

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InfergridError } from '../../src/errors.ts';
import {
  DEFAULT_HEAP_GROWING_PERCENT,
  HEAP_GROWING_PERCENT_ENV,
  heapGrowingFlag,
} from '../../src/cli/heap.ts';

describe('heap sizing of serving processes', () => {
  it('grows the heap by the default percentage when nothing says otherwise', () => {
    assert.equal(heapGrowingFlag({}, []), `--heap-growing-percent=${DEFAULT_HEAP_GROWING_PERCENT}`);
  });

  it('takes the percentage from the environment, and 0 leaves V8 its own heuristics', () => {
    assert.equal(heapGrowingFlag({ [HEAP_GROWING_PERCENT_ENV]: '350' }, []), '--heap-growing-percent=350');
    assert.equal(heapGrowingFlag({ [HEAP_GROWING_PERCENT_ENV]: '0' }, []), undefined);
    assert.equal(heapGrowingFlag({ [HEAP_GROWING_PERCENT_ENV]: ' ' }, []), '--heap-growing-percent=200');
  });

  it('leaves a flag given to node alone', () => {
    assert.equal(heapGrowingFlag({}, ['--heap-growing-percent=50']), undefined);
    assert.equal(
      heapGrowingFlag({ [HEAP_GROWING_PERCENT_ENV]: '300' }, ['--heap_growing_percent=50']),
      undefined,
    );
  });

  it('refuses a value that is not a percentage, naming the variable', () => {
    for (const bad of ['-5', '2.5', 'lots', '20000']) {
      assert.throws(
        () => heapGrowingFlag({ [HEAP_GROWING_PERCENT_ENV]: bad }, []),
        (err: Error) =>
          err instanceof InfergridError &&
          err.code === 'CONFIG_INVALID' &&
          err.message.includes(HEAP_GROWING_PERCENT_ENV),
      );
    }
  });
});

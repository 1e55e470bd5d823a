import { loadConfig } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { deriveWorkerKey } from '../rpc/index.ts';
import { parseCommandArgs } from './args.ts';

export const CREDENTIAL_HELP = `Usage: infergrid credential --worker <id> [-c <file>]

Prints the RPC key of one worker: 64 hex digits derived from the cluster secret and the
worker's id. Give it to that worker as INFERGRID_WORKER_KEY (or auth.workerKey) and start it
with --id <id>: it can then join any coordinator holding the cluster secret as that id, and
as no other. The cluster secret itself stays on the coordinators. The key never crosses the
wire: the handshake proves it by HMAC challenge-response.

Options:
      --worker <id>        the worker's id (its --id)                       (required)
  -c, --config <file>      config holding the cluster secret (auth.token); optional
  -h, --help               show this help

Environment: INFERGRID_TOKEN (the cluster secret; overrides auth.token).
See docs/rpc-security.md.`;

export async function runCredentialCommand(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('credential', argv, {
    config: { type: 'string', short: 'c' },
    worker: { type: 'string' },
  });
  if (values.help) {
    console.log(CREDENTIAL_HELP);
    return;
  }
  const id = values.worker as string | undefined;
  if (!id)
    throw new InfergridError('CONFIG_INVALID', '--worker <id> is required; see infergrid credential --help');
  const { config } = loadConfig({ file: values.config as string | undefined, env: process.env });
  if (!config.auth.token)
    throw new InfergridError(
      'CONFIG_INVALID',
      'no cluster secret to derive the key from: set auth.token in the config given with -c, or INFERGRID_TOKEN',
    );
  console.log(deriveWorkerKey(config.auth.token, id).toString('hex'));
}

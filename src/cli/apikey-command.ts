import { generateApiKey, hashApiKey } from '../api/index.ts';
import { API_SCOPES, type ApiScope } from '../config/index.ts';
import { InfergridError } from '../errors.ts';
import { parseCommandArgs } from './args.ts';

export const APIKEY_HELP = `Usage: infergrid apikey --name <name> [--scopes infer,metrics,admin]

Makes a new HTTP API key. Prints the key (give it to the client; it is not kept anywhere) and
what the coordinator needs to know it: its SHA-256, as a config entry and as an
INFERGRID_API_KEYS entry. Clients send it as "Authorization: Bearer <key>".

Options:
  -n, --name <name>        who holds the key (logs and async requests name it)   (required)
  -s, --scopes <list>      comma-separated: infer (data plane), metrics (read-only
                           operations), admin (everything)                     (default infer)
      --hash <key>         print the SHA-256 of an existing key instead
  -h, --help               show this help

See docs/security.md.`;

export async function runApikeyCommand(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('apikey', argv, {
    name: { type: 'string', short: 'n' },
    scopes: { type: 'string', short: 's' },
    hash: { type: 'string' },
  });
  if (values.help) {
    console.log(APIKEY_HELP);
    return;
  }
  if (typeof values.hash === 'string') {
    console.log(hashApiKey(values.hash));
    return;
  }
  const name = values.name as string | undefined;
  if (!name || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) {
    throw new InfergridError(
      'CONFIG_INVALID',
      '--name <name> is required: letters, digits, "_", "." and "-"; see infergrid apikey --help',
    );
  }
  const scopes = String(values.scopes ?? 'infer')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = scopes.filter((s) => !(API_SCOPES as readonly string[]).includes(s));
  if (scopes.length === 0 || unknown.length > 0) {
    throw new InfergridError(
      'CONFIG_INVALID',
      `--scopes takes ${API_SCOPES.join(', ')}; got ${JSON.stringify(values.scopes)}`,
    );
  }
  const key = generateApiKey();
  const sha256 = hashApiKey(key);
  const list = (scopes as ApiScope[]).join(', ');
  console.log(
    [
      `key (give this to the client; it is shown once):`,
      `  ${key}`,
      '',
      'config (auth.apiKeys):',
      `  - name: ${name}`,
      `    scopes: [${list}]`,
      `    sha256: ${sha256}`,
      '',
      'or environment:',
      `  INFERGRID_API_KEYS=${name}:${scopes.join('+')}:${sha256}`,
    ].join('\n'),
  );
}

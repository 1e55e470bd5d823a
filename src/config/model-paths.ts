/**
 * Where model files may come from. A path names a file inside a repository root (or, written
 * `pkg:<package>/<file>`, inside that installed npm package) once symlinks are followed; the
 * caller opens the real path returned here, not the one it was given, so what was checked is
 * what is read.
 *
 * Trade-off: a path outside every root gets one answer ("outside"), whatever is (or is not)
 * there, so a client probing the machine learns nothing; the operator, whose own config names
 * the file, gets the path and the roots from config loading instead.
 */

import { existsSync, realpathSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InfergridError } from '../errors.ts';

/** What the repository load API answers for any path outside the roots, the same for every such path. */
export const OUTSIDE_ROOTS_MESSAGE = 'model path is outside the repository roots';

/** A model path, located. `missing` and `found` are inside a root; nothing is said of paths outside. */
export type LocatedPath =
  | { state: 'found' /** The real path (symlinks followed): open this one. */; path: string }
  | { state: 'missing' /** The path as resolved, for messages: it is inside a root. */; path: string }
  | { state: 'package-missing' }
  | { state: 'outside' };

/** `<package>/<file>`: an npm name (optionally scoped) that is never `.` or `..`, then the file. */
const PACKAGE_SPEC = /^((?:@[A-Za-z0-9~-][\w.~-]*\/)?[A-Za-z0-9~-][\w.~-]*)\/(.+)$/;

/** Whether `path` is `root` or inside it; both absolute and normalised. `/a/rootX` is not inside `/a/root`. */
export function isInsideRoot(path: string, root: string): boolean {
  if (path === root) return true;
  return path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * The real path of `path` (absolute, normalised) as far as it exists: its deepest existing
 * ancestor's real path with the rest appended. `exists` says whether all of it did.
 */
export function realPathOf(path: string): { real: string; exists: boolean } {
  const rest: string[] = [];
  for (let at = path; ; ) {
    try {
      const real = realpathSync(at);
      return { real: rest.length === 0 ? real : join(real, ...rest.reverse()), exists: rest.length === 0 };
    } catch {
      // missing, not a folder, or unreadable: all mean "not all of it exists" here
      const parent = dirname(at);
      if (parent === at) return { real: path, exists: false };
      rest.push(basename(at));
      at = parent;
    }
  }
}

export interface ModelPathsOptions {
  /** Folders models may be loaded from; relative ones against `baseDir`. */
  roots: readonly string[];
  /** Folder of the config file: relative model paths and roots are resolved against it. */
  baseDir: string;
  /**
   * Files that may be loaded wherever they are: those the operator's own config names (a
   * coordinator sends them back to a worker when it re-applies the config). Absolute paths.
   */
  files?: Iterable<string>;
  /** Folders above which `pkg:` looks for node_modules. Default: `baseDir`, then infergrid's own folder. */
  packageSearchFrom?: readonly string[];
}

export class ModelPaths {
  /** The roots' real paths. */
  readonly roots: readonly string[];
  readonly baseDir: string;
  readonly #files: Set<string>;
  readonly #packageSearchFrom: readonly string[];

  constructor(options: ModelPathsOptions) {
    this.baseDir = options.baseDir;
    this.roots = options.roots.map((r) => realPathOf(resolve(options.baseDir, r)).real);
    this.#files = new Set([...(options.files ?? [])].map((f) => realPathOf(resolve(f)).real));
    this.#packageSearchFrom = options.packageSearchFrom ?? [
      options.baseDir,
      dirname(fileURLToPath(import.meta.url)),
    ];
  }

  /**
   * Locates a model path: relative ones against `baseDir`, `pkg:<package>/<file>` in the
   * node_modules folders above `baseDir` (and above infergrid), where the package's own folder
   * is the root that path must stay inside.
   */
  locate(path: string): LocatedPath {
    if (path.startsWith('pkg:')) return this.#locatePackage(path.slice(4));
    const given = isAbsolute(path) ? resolve(path) : resolve(this.baseDir, path);
    const { real, exists } = realPathOf(given);
    if (!this.roots.some((root) => isInsideRoot(real, root)) && !(exists && this.#files.has(real)))
      return { state: 'outside' };
    return exists ? { state: 'found', path: real } : { state: 'missing', path: given };
  }

  #locatePackage(spec: string): LocatedPath {
    const m = PACKAGE_SPEC.exec(spec);
    if (!m) return { state: 'outside' };
    for (const start of this.#packageSearchFrom) {
      for (let dir = resolve(start); ; dir = dirname(dir)) {
        const packageDir = join(dir, 'node_modules', m[1]!);
        if (existsSync(packageDir)) {
          const { real, exists } = realPathOf(resolve(packageDir, m[2]!));
          if (!isInsideRoot(real, realPathOf(packageDir).real) && !(exists && this.#files.has(real)))
            return { state: 'outside' };
          if (exists) return { state: 'found', path: real };
        }
        if (dirname(dir) === dir) break;
      }
    }
    return { state: 'package-missing' };
  }
}

/** Who may load what at run time: the roots, and whether `js` models (code) may be defined. */
export interface RuntimeLoadPolicy {
  paths: ModelPaths;
  /** `repository.allowRuntimeJs`. */
  allowRuntimeJs: boolean;
  /** Real paths of the js modules the operator's own config names: loadable whatever allowRuntimeJs says. */
  configuredJs?: ReadonlySet<string>;
}

/** What of a loaded config decides its runtime loads. */
export interface RuntimeLoadConfig {
  repository: { roots: readonly string[]; allowRuntimeJs: boolean };
  models: readonly {
    backend: string;
    path?: string | undefined;
    labels?: Readonly<Record<string, string>> | undefined;
  }[];
}

/**
 * The runtime-load policy of a loaded config, one for the coordinator and the worker so both
 * admit the same: files inside the roots, and the config file's own model files (and js
 * modules, whatever allowRuntimeJs says) wherever they are, since a coordinator sends them
 * back when it re-applies the config or a client reloads one of them.
 */
export function runtimeLoadPolicy(config: RuntimeLoadConfig, baseDir: string): RuntimeLoadPolicy {
  const own = (js: boolean) =>
    config.models.flatMap((m) =>
      m.path !== undefined && (!js || m.backend === 'js') ? [realPathOf(resolve(baseDir, m.path)).real] : [],
    );
  // a config file's labels files are its operator's too
  const labels = config.models.flatMap((m) =>
    Object.values(m.labels ?? {}).map((file) => realPathOf(resolve(baseDir, file)).real),
  );
  return {
    paths: new ModelPaths({ roots: config.repository.roots, baseDir, files: [...own(false), ...labels] }),
    allowRuntimeJs: config.repository.allowRuntimeJs,
    configuredJs: new Set(own(true)),
  };
}

/**
 * Checks a model config received at run time (the repository load API, or a coordinator's
 * control message) and locates its file. Throws FORBIDDEN for a `js` model when runtime js is
 * off and for a path outside the roots; the messages name neither the path nor the roots.
 * Returns undefined for a model with no file.
 */
export function admitRuntimeModel(
  model: { name: string; backend: string; path?: string | undefined },
  policy: RuntimeLoadPolicy,
): LocatedPath | undefined {
  const located = model.path === undefined ? undefined : policy.paths.locate(model.path);
  if (model.backend === 'js' && !policy.allowRuntimeJs) {
    const configured = located?.state === 'found' && policy.configuredJs?.has(located.path) === true;
    if (!configured)
      throw new InfergridError(
        'FORBIDDEN',
        `model "${model.name}": loading a js model at run time is off (a js model runs its module's code); set repository.allowRuntimeJs: true on the coordinator and the workers, or name the model in the config file`,
      );
  }
  if (located?.state === 'outside')
    throw new InfergridError(
      'FORBIDDEN',
      `model "${model.name}": ${OUTSIDE_ROOTS_MESSAGE}; only files inside repository.roots (or pkg:<package>/<file>) can be loaded`,
    );
  return located;
}

/**
 * Checks the labels files of a model config received at run time: each inside the roots (else
 * FORBIDDEN, with the same answer as for a model path) and present, since the coordinator is
 * the one that reads them (INVALID_ARGUMENT naming the output). Returns output -> real path.
 */
export function admitLabels(
  model: { name: string; labels?: Readonly<Record<string, string>> | undefined },
  policy: RuntimeLoadPolicy,
): Map<string, string> {
  const out = new Map<string, string>();
  for (const [output, file] of Object.entries(model.labels ?? {})) {
    const located = policy.paths.locate(file);
    if (located.state === 'found') out.set(output, located.path);
    else if (located.state !== 'outside')
      throw new InfergridError(
        'INVALID_ARGUMENT',
        `model "${model.name}": labels file of output "${output}" not found: ${located.state === 'missing' ? located.path : file}`,
      );
    else
      throw new InfergridError(
        'FORBIDDEN',
        `model "${model.name}": labels file of output "${output}": ${OUTSIDE_ROOTS_MESSAGE}; only files inside repository.roots can be named`,
      );
  }
  return out;
}

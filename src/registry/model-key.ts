/** The key of one model version in the registry's maps. */

export function modelKey(name: string, version: string): string {
  return `${name}@${version}`;
}

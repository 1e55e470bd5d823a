/** The order of version labels, which "the newest version" and `latest: N` policies mean. */

/**
 * Orders versions newest first: numeric labels by number, before any other label; other
 * labels in descending string order. (A total order, whatever order versions are declared in.)
 */
export function compareVersionsDesc(a: string, b: string): number {
  const na = Number(a);
  const nb = Number(b);
  const aNumeric = a.trim() !== '' && Number.isFinite(na);
  const bNumeric = b.trim() !== '' && Number.isFinite(nb);
  if (aNumeric && bNumeric) return nb - na || b.localeCompare(a);
  if (aNumeric !== bNumeric) return aNumeric ? -1 : 1;
  return b.localeCompare(a);
}

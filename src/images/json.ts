/** The wire shape of an image, for the HTTP API. */
import type { ImageInfo } from './store.js';

/** The JSON shape of an image for `--json` and the HTTP API. */
export function imageJson(i: ImageInfo): Record<string, unknown> {
  return {
    name: i.name,
    digest: i.digest,
    size_bytes: i.sizeBytes,
    file_count: i.fileCount,
    created_at: i.createdAt,
    source: i.source,
    config: i.config,
    neutralised: i.neutralised,
    neutralised_notes: i.neutralisedNotes,
  };
}

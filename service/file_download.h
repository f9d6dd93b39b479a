// The body of a file download: from the file cache (service/file_cache.h) when it holds the whole file
// and all of it is asked for, else rebuilt from the chunks by a FileStreamer, which fills the cache on
// the way when the whole file is asked for.
#pragma once

#include <cstdint>
#include <memory>

#include "codec/manifest.h"
#include "common/file_span.h"
#include "common/status.h"

namespace deltastore {

class FileCache;
class VersionReader;

// Bytes [begin, end) of `file`, a file of the version `reader` reads (the reader stays alive while the
// body does). A rebuild checks the file's sha256 before the last byte of a whole file goes out, a cached
// copy its checksum. `cache` may be null (no cache).
FileBody OpenFileBody(const std::shared_ptr<VersionReader>& reader, const FileEntry* file, uint64_t begin,
                      uint64_t end, FileCache* cache);

}  // namespace deltastore

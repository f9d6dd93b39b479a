#include "service/file_download.h"

#include "service/file_cache.h"
#include "service/file_streamer.h"

namespace deltastore {

FileBody OpenFileBody(const std::shared_ptr<VersionReader>& reader, const FileEntry* file, uint64_t begin,
                      uint64_t end, FileCache* cache) {
  const bool whole = begin == 0 && end == file->size;
  if (cache != nullptr && whole) {
    std::shared_ptr<CachedFileReader> hit = cache->Find(file->sha256, file->size);
    if (hit) return {[reader, hit]() { return hit->Next(); }, hit};
  }
  auto streamer = std::make_shared<FileStreamer>(reader.get(), file, begin, end, /*verify=*/true);
  std::shared_ptr<CacheFill> fill;
  if (cache != nullptr && whole) fill = cache->Begin(file->sha256, file->size);
  if (!fill) return {[reader, streamer]() { return streamer->Next(); }, nullptr};
  // The streamer checks the file's sha256 before it hands out the last piece, so the fill is complete
  // and verified when the empty piece comes.
  return {[reader, streamer, fill, sha256 = file->sha256]() -> StatusOr<std::string> {
            auto piece = streamer->Next();
            if (!piece.ok()) return piece;
            if (piece->empty()) {
              fill->Commit(sha256);
            } else {
              fill->Append(*piece);
            }
            return piece;
          },
          nullptr};
}

}  // namespace deltastore

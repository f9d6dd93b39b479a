// FileCache: the rebuilt bytes of recently downloaded files, kept on this node's disk up to a byte budget
// (deltastored --file-cache-gb: by default AutoFileCacheBytes; 0 turns it off), so that a file many
// deployments pull is rebuilt once and then read back like a static file. docs/http_api.md, "File cache".
//
// Entries are named by the file's sha256 (the manifest's `sha256`, the download's ETag), so every version
// that serves the same bytes shares one entry and an entry can never answer for other bytes: a download
// looks its file up only after resolving the version. An entry is written only from bytes whose sha256
// matched (a whole-file rebuild under a temporary name, renamed into place when complete; or a lossless
// version's sealed upload, linked into place). Its name also carries the XXH3-128 of its bytes
// (docs/http_api.md, "File cache entries"), checked before the last byte goes out: damage on disk cuts
// the download, at a small fraction of the cost of hashing the file again with sha256. Least recently
// used entries go first when the budget is exceeded. Nothing in the cache is needed: deleting the
// directory loses nothing.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/file_span.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/xxh128.h"

namespace deltastore {

class FileCache;

// Reads one entry, checking its XXH3-128 before the last byte goes out, in one of two ways (a reader
// serves one): piece by piece (Next), with a thread of its own that reads and hashes up to two pieces
// ahead while the caller sends the ones before; or as a FileSpan that the caller sends with sendfile(2)
// while that thread hashes the entry, Clear() answering for its last byte. The thread starts at the
// first call and is stopped and joined by the destructor.
class CachedFileReader : public FileSpan {
 public:
  CachedFileReader(FileCache* cache, int fd, const Digest& sha256, uint64_t size, std::string xxh128);
  ~CachedFileReader() override;
  CachedFileReader(const CachedFileReader&) = delete;
  CachedFileReader& operator=(const CachedFileReader&) = delete;
  // The next piece (at most 4 MiB); empty at the end. A damaged entry is dropped from the cache and read
  // as CORRUPTION before its last piece; every later call returns that error.
  StatusOr<std::string> Next();

  // FileSpan: the entry's descriptor and size. Clear(end) answers at once before the last byte, and for
  // it waits for the hash of the whole entry; a damaged entry is dropped from the cache and CORRUPTION.
  int fd() const override { return fd_; }
  uint64_t size() const override { return size_; }
  Status Clear(uint64_t end) override;

 private:
  // The reading thread of Next: reads, hashes and queues pieces until the end, an error or the stop.
  void ReadAhead();
  // The reading thread of Clear: hashes the whole entry, then sets `verdict_`.
  void HashAll();
  // One piece at `pos`, hashed; the error of a failed read or of a last piece whose digest is wrong.
  StatusOr<std::string> ReadPiece(uint64_t pos);
  // Reads `n` bytes at `pos` into `out` and hashes them; after the last byte, checks the digest.
  Status ReadAndHash(uint64_t pos, char* out, size_t n);

  FileCache* cache_;
  int fd_;
  Digest sha256_;
  uint64_t size_;
  std::string xxh128_;  // from the entry's name
  Xxh128 hash_;         // the reading thread's
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StatusOr<std::string>> ready_;  // read ahead, in order; an error ends it
  bool stop_ = false;
  uint64_t handed_ = 0;  // bytes handed out
  Status failed_;
  bool hashed_ = false;  // HashAll is done, with `verdict_`
  Status verdict_;
  std::thread thread_;
};

// Writes a new entry from the pieces of a file, in order. Commit() makes it visible once all `size` bytes
// came; a fill destroyed before that leaves nothing behind.
class CacheFill {
 public:
  CacheFill(FileCache* cache, int fd, std::string temp_path, const Digest& sha256, uint64_t size);
  ~CacheFill();
  CacheFill(const CacheFill&) = delete;
  CacheFill& operator=(const CacheFill&) = delete;
  // Appends a piece; a write error (a full disk) abandons the fill quietly: the download goes on.
  void Append(std::string_view piece);
  // After the last piece, with the sha256 the caller checked over all of them: publishes the entry
  // (unless the cache has it already). A fill takes only the digest it was begun for.
  void Commit(const Digest& sha256);

 private:
  void Abandon();
  // Removes the closed temporary file and ends the fill.
  void Discard();
  FileCache* cache_;
  int fd_;
  std::string temp_path_;
  Digest sha256_;
  uint64_t size_, written_ = 0;
  Xxh128 hash_;
};

// The budget deltastored gives the cache by default (`--file-cache-gb auto`): a tenth of the size of the
// file system that holds `dir` (or its nearest existing parent), at most half of the space free there now;
// 0 when neither can be read.
uint64_t AutoFileCacheBytes(const std::string& dir);

class FileCache {
 public:
  // Opens (creates) the cache in `dir` with a budget of `capacity` bytes: removes temporary files left by
  // a crash and evicts down to the budget (everything when it is 0).
  static StatusOr<std::unique_ptr<FileCache>> Open(const std::string& dir, uint64_t capacity);

  // A reader of the entry of `sha256` when the cache holds it with `size` bytes, else nullptr.
  std::unique_ptr<CachedFileReader> Find(const Digest& sha256, uint64_t size);
  // A fill for a new entry, or nullptr when the cache holds it or is filling it already, or the file is
  // larger than the budget.
  std::unique_ptr<CacheFill> Begin(const Digest& sha256, uint64_t size);
  // Takes the file at `path` (a lossless version's sealed upload, never written again) as the entry of
  // `sha256`, with the XXH3-128 its reader computed, by a hard link: no copy. Does nothing when the cache
  // holds it, it is larger than the budget, the file is not `size` bytes or cannot be linked here.
  void Adopt(const std::string& path, const Digest& sha256, uint64_t size, const std::string& xxh128);
  // Removes the entry (a deleted version's files, a damaged entry). Readers that have it open keep reading.
  void Drop(const Digest& sha256);

  uint64_t capacity() const { return capacity_; }
  uint64_t bytes() const;
  size_t entries() const;

 private:
  friend class CacheFill;
  FileCache(std::string dir, uint64_t capacity) : dir_(std::move(dir)), capacity_(capacity) {}
  // An entry's file: "<sha256 hex>-<XXH3-128 hex>".
  std::string PathOf(const std::string& hex, const std::string& xxh128) const;
  // Under mu_: removes least recently used entries until the total fits the budget.
  void EvictLocked();
  // Renames a complete fill or an adopted link into place, unless the cache holds the entry already.
  void Publish(const Digest& sha256, uint64_t size, const std::string& temp_path, const std::string& xxh128);
  void EndFill(const Digest& sha256);

  struct Entry {
    uint64_t size;
    uint64_t last_use;   // a logical clock: larger is more recent
    std::string xxh128;  // 16 bytes, from the file's name
  };
  // Under mu_: unlinks the entry's file and forgets it.
  void RemoveLocked(std::map<std::string, Entry>::iterator it);
  const std::string dir_;
  const uint64_t capacity_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;  // by sha256 hex
  std::set<std::string> filling_;
  uint64_t bytes_ = 0;
  uint64_t clock_ = 0;
  uint64_t adopted_ = 0;  // numbers the temporary links of adoptions
};

}  // namespace deltastore

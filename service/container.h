// The delta container: a self-describing stream of one version's manifest, its base's manifest and
// every chunk the version references, which rebuilds the version offline given the base checkpoint
// (docs/container_format.md).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "codec/manifest.h"
#include "storage/chunk_store.h"

namespace deltastore {

inline constexpr char kContainerMagic[8] = {'D', 'S', 'C', 'N', 'T', 'N', 'R', '\0'};
inline constexpr uint32_t kContainerFormatVersion = 1;

// Streams a container piece by piece from the chunk store.
class ContainerStreamer {
 public:
  ContainerStreamer(ChunkStore* store, const Manifest& manifest, const std::optional<Manifest>& base);
  // Total bytes the stream will produce (known before the first byte, for Content-Length).
  uint64_t size() const { return size_; }
  StatusOr<std::string> Next();  // empty at the end

 private:
  ChunkStore* store_;
  std::string head_;
  std::vector<ChunkRef> chunks_;  // unique, in manifest order
  size_t next_chunk_ = 0;
  bool head_sent_ = false;
  bool done_ = false;
  uint64_t size_ = 0;
  Sha256 hash_;
};

// A container file opened for reading: a read-only ChunkStore over its chunk records.
class ContainerFile : public ChunkStore {
 public:
  // Parses the header and the manifests, indexes the chunk records and checks the trailing digest.
  static StatusOr<std::unique_ptr<ContainerFile>> Open(const std::string& path);
  ~ContainerFile() override;

  const Manifest& manifest() const { return manifest_; }
  const std::optional<Manifest>& base_manifest() const { return base_; }

  StatusOr<std::string> Get(const Digest& digest) override;
  StatusOr<bool> Has(const Digest& digest) override { return index_.count(digest) > 0; }
  StatusOr<PutResult> Put(std::string_view) override { return ReadOnly(); }
  Status Ref(const Digest&, int64_t) override { return ReadOnly(); }
  Status Unref(const Digest&, int64_t) override { return ReadOnly(); }
  StatusOr<int64_t> RefCount(const Digest&) override { return ReadOnly(); }
  StatusOr<GcStats> Gc() override { return ReadOnly(); }
  StatusOr<ChunkStoreStats> Stats() override;
  Status ForEach(const std::function<Status(const Digest&, int64_t, uint64_t)>& fn) override;
  Status SetRefCount(const Digest&, int64_t) override { return ReadOnly(); }
  Status PutUnverified(const Digest&, std::string_view) override { return ReadOnly(); }

 private:
  ContainerFile() = default;
  static Status ReadOnly() { return FailedPrecondition("a container is read-only"); }
  int fd_ = -1;
  Manifest manifest_;
  std::optional<Manifest> base_;
  std::map<Digest, std::pair<uint64_t, uint64_t>> index_;  // digest -> (offset, length)
};

}  // namespace deltastore

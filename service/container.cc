#include "service/container.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "common/endian.h"

namespace deltastore {
namespace {

std::vector<ChunkRef> UniqueChunks(const Manifest& m) {
  std::vector<ChunkRef> out;
  std::set<Digest> seen;
  auto add = [&](const ChunkRef& c) {
    if (seen.insert(c.digest).second) out.push_back(c);
  };
  for (const auto& f : m.files) {
    if (f.header) add(*f.header);
    for (const auto& t : f.tensors)
      for (const auto& c : t.chunks) add(c);
    for (const auto& c : f.chunks) add(c);
  }
  return out;
}

constexpr uint64_t kRecordHeader = 32 + 8;
constexpr uint64_t kMaxManifestBytes = 1ull << 30;

}  // namespace

ContainerStreamer::ContainerStreamer(ChunkStore* store, const Manifest& manifest,
                                     const std::optional<Manifest>& base)
    : store_(store), chunks_(UniqueChunks(manifest)) {
  head_.append(kContainerMagic, 8);
  PutLE(&head_, kContainerFormatVersion, 4);
  PutLE(&head_, 0, 4);  // flags
  std::string m = SerializeManifest(manifest);
  PutLE(&head_, m.size(), 8);
  head_ += m;
  std::string b = base ? SerializeManifest(*base) : std::string();
  PutLE(&head_, b.size(), 8);
  head_ += b;
  PutLE(&head_, chunks_.size(), 8);
  size_ = head_.size() + 32;
  for (const auto& c : chunks_) size_ += kRecordHeader + c.stored_size;
}

StatusOr<std::string> ContainerStreamer::Next() {
  if (!head_sent_) {
    head_sent_ = true;
    hash_.Update(head_);
    return std::move(head_);
  }
  if (next_chunk_ < chunks_.size()) {
    const ChunkRef& c = chunks_[next_chunk_++];
    DS_ASSIGN_OR_RETURN(std::string bytes, store_->Get(c.digest));
    if (bytes.size() != c.stored_size) return Corruption("chunk size differs from the manifest");
    std::string rec(c.digest.Raw());
    PutLE(&rec, bytes.size(), 8);
    rec += bytes;
    hash_.Update(rec);
    return rec;
  }
  if (!done_) {
    done_ = true;
    return std::string(hash_.Finish().Raw());
  }
  return std::string();
}

ContainerFile::~ContainerFile() {
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<std::unique_ptr<ContainerFile>> ContainerFile::Open(const std::string& path) {
  std::unique_ptr<ContainerFile> c(new ContainerFile());
  c->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (c->fd_ < 0) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(c->fd_, &st) != 0) return IOError("cannot stat " + path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  Sha256 hash;
  uint64_t pos = 0;
  auto read = [&](uint64_t len, std::string* out) -> Status {
    if (len > size || pos + len > size - 32 || size < 32) return InvalidArgument("container is truncated");
    out->resize(len);
    uint64_t done = 0;
    while (done < len) {
      ssize_t r = ::pread(c->fd_, out->data() + done, len - done, static_cast<off_t>(pos + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return IOError("short read in " + path);
      done += r;
    }
    hash.Update(*out);
    pos += len;
    return OkStatus();
  };
  std::string buf;
  DS_RETURN_IF_ERROR(read(16, &buf));
  if (std::memcmp(buf.data(), kContainerMagic, 8) != 0) return InvalidArgument("not a deltastore container");
  uint32_t version = static_cast<uint32_t>(GetLE(buf.data() + 8, 4));
  if (version != kContainerFormatVersion) {
    return InvalidArgument("container format version " + std::to_string(version) + " is not supported");
  }
  for (int which = 0; which < 2; ++which) {
    DS_RETURN_IF_ERROR(read(8, &buf));
    uint64_t len = GetLE(buf.data(), 8);
    if (len > kMaxManifestBytes) return InvalidArgument("container manifest is too large");
    DS_RETURN_IF_ERROR(read(len, &buf));
    if (which == 1 && len == 0) break;
    auto m = ParseManifest(buf);
    if (!m.ok()) return InvalidArgument("container: " + m.status().message());
    if (which == 0) {
      c->manifest_ = std::move(*m);
    } else {
      c->base_ = std::move(*m);
    }
  }
  DS_RETURN_IF_ERROR(read(8, &buf));
  uint64_t count = GetLE(buf.data(), 8);
  for (uint64_t i = 0; i < count; ++i) {
    DS_RETURN_IF_ERROR(read(kRecordHeader, &buf));
    DS_ASSIGN_OR_RETURN(Digest d, Digest::FromRaw(std::string_view(buf.data(), 32)));
    uint64_t len = GetLE(buf.data() + 32, 8);
    uint64_t at = pos;
    // Hash the record's bytes as part of the whole-file digest, piece by piece.
    for (uint64_t off = 0; off < len;) {
      uint64_t n = std::min<uint64_t>(len - off, 4 << 20);
      DS_RETURN_IF_ERROR(read(n, &buf));
      off += n;
    }
    c->index_[d] = {at, len};
  }
  if (pos + 32 != size) return InvalidArgument("container has trailing bytes or is truncated");
  std::string trailer(32, '\0');
  if (::pread(c->fd_, trailer.data(), 32, static_cast<off_t>(pos)) != 32)
    return IOError("short read in " + path);
  if (trailer != hash.Finish().Raw())
    return InvalidArgument("container digest does not match (corrupt download?)");
  if (c->manifest_.base && (!c->base_ || ManifestDigest(*c->base_) != *c->manifest_.base)) {
    return InvalidArgument("container's base manifest does not match the version's base");
  }
  return c;
}

StatusOr<std::string> ContainerFile::Get(const Digest& digest) {
  auto it = index_.find(digest);
  if (it == index_.end()) return NotFound("container lacks chunk " + digest.ToString());
  std::string out(it->second.second, '\0');
  uint64_t done = 0;
  while (done < out.size()) {
    ssize_t r =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(it->second.first + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return IOError("short read in container");
    done += r;
  }
  if (Sha256::Of(out) != digest)
    return Corruption("container chunk " + digest.ToString() + " fails its digest");
  return out;
}

StatusOr<ChunkStoreStats> ContainerFile::Stats() {
  ChunkStoreStats s;
  for (const auto& [d, loc] : index_) {
    s.chunks++;
    s.bytes += loc.second;
  }
  return s;
}

Status ContainerFile::ForEach(const std::function<Status(const Digest&, int64_t, uint64_t)>& fn) {
  for (const auto& [d, loc] : index_) DS_RETURN_IF_ERROR(fn(d, 1, loc.second));
  return OkStatus();
}

}  // namespace deltastore

#include "service/upload_parts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "service/records.h"

namespace deltastore {

namespace {

constexpr uint64_t kPartBytes = 64ull << 20;
constexpr char kNs[] = "upload_parts";

std::string StartKey(const std::string& id, uint64_t start) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%020" PRIu64, start);
  return Key(id, buf);
}

// Closes a descriptor when it goes out of scope.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Status ReadAt(int fd, char* out, size_t n, uint64_t at) {
  while (n > 0) {
    ssize_t got = ::pread(fd, out, n, static_cast<off_t>(at));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      return IOError("reading an upload's spool file: " +
                     std::string(got < 0 ? std::strerror(errno) : "short"));
    out += got;
    n -= static_cast<size_t>(got);
    at += static_cast<uint64_t>(got);
  }
  return OkStatus();
}

Status WriteAt(int fd, std::string_view bytes, uint64_t at) {
  while (!bytes.empty()) {
    ssize_t put = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(at));
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) {
      if (errno == ENOSPC) return DiskFull("disk full while fetching an upload");
      return IOError(std::string("writing an upload's spool file: ") + std::strerror(errno));
    }
    bytes.remove_prefix(static_cast<size_t>(put));
    at += static_cast<uint64_t>(put);
  }
  return OkStatus();
}

}  // namespace

Status UploadParts::Store(const std::string& id, const std::string& path, uint64_t from, uint64_t to,
                          MetaBatch* batch) {
  if (!enabled() || to <= from) return OkStatus();
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) return IOError("cannot open the spool file of upload " + id);
  const std::string nonce = NewId().substr(0, 8);
  std::string buf;
  for (uint64_t start = from; start < to; start += kPartBytes) {
    const uint64_t end = std::min(to, start + kPartBytes);
    buf.resize(end - start);
    DS_RETURN_IF_ERROR(ReadAt(f.fd, buf.data(), buf.size(), start));
    std::string object = "uploads/";
    object += id;
    object += "/" + std::to_string(start) + "-" + std::to_string(end) + "-";
    object += nonce;
    DS_RETURN_IF_ERROR(s_->stores.objects->Put(object, buf));
    batch->Put(kNs, StartKey(id, start), object);
  }
  return OkStatus();
}

Status UploadParts::Fetch(const std::string& id, const std::string& path, uint64_t offset) {
  if (!enabled()) return OkStatus();
  std::lock_guard<std::mutex> lock(fetch_mu_);
  Fd f{::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)};
  if (f.fd < 0) return IOError("cannot open the spool file of upload " + id);
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return IOError("cannot stat the spool file of upload " + id);
  const uint64_t local = static_cast<uint64_t>(st.st_size);
  if (local == offset) return OkStatus();
  // The parts up to `offset`, in order; what this node has is kept up to the last part boundary in it.
  std::vector<std::pair<uint64_t, std::string>> parts;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(kNs, Key(id, ""), "", [&](std::string_view key, std::string_view value) {
        const uint64_t start = std::strtoull(std::string(key.substr(id.size() + 1)).c_str(), nullptr, 10);
        if (start < offset) parts.emplace_back(start, std::string(value));
        return true;
      }));
  uint64_t keep = 0;
  for (const auto& [start, object] : parts) {
    if (start <= local) keep = start;
  }
  if (local >= offset) keep = offset;
  if (::ftruncate(f.fd, static_cast<off_t>(keep)) != 0) return IOError("cannot truncate a spool file");
  uint64_t at = keep;
  for (const auto& [start, object] : parts) {
    if (start < keep) continue;
    if (start != at)
      return DataLoss("upload " + id + ": its stored pieces have a gap at byte " + std::to_string(at));
    auto bytes = s_->stores.objects->Get(object);
    if (!bytes.ok()) {
      if (bytes.status().code() == StatusCode::kNotFound)
        return DataLoss("upload " + id + ": a stored piece is gone");
      return bytes.status();
    }
    DS_RETURN_IF_ERROR(WriteAt(f.fd, *bytes, start));
    at += bytes->size();
  }
  if (at != offset) return DataLoss("upload " + id + ": its stored pieces end at byte " + std::to_string(at));
  return OkStatus();
}

Status UploadParts::Remove(const std::string& id, MetaBatch* batch) {
  if (!enabled()) return OkStatus();
  std::vector<std::pair<std::string, std::string>> parts;
  DS_RETURN_IF_ERROR(
      s_->meta()->Scan(kNs, Key(id, ""), "", [&](std::string_view key, std::string_view value) {
        parts.emplace_back(key, value);
        return true;
      }));
  // Also the objects of writers that lost a race (listed nowhere): everything under the upload's name.
  std::vector<std::string> objects;
  DS_RETURN_IF_ERROR(s_->stores.objects->List(
      "uploads/" + id + "/", [&](std::string_view key, uint64_t) { objects.emplace_back(key); }));
  for (const auto& o : objects) DS_RETURN_IF_ERROR(s_->stores.objects->Delete(o));
  for (const auto& [key, value] : parts) batch->Delete(kNs, key);
  return OkStatus();
}

}  // namespace deltastore

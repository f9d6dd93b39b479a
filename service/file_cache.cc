#include "service/file_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>
#include <vector>

namespace deltastore {
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kPiece = uint64_t{4} << 20;
constexpr std::string_view kTempPrefix = "tmp-";

bool IsHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// An entry's name, "<sha256 hex>-<XXH3-128 hex>" (docs/http_api.md, "File cache entries"), split into
// the sha256 hex and the 16 checksum bytes; nullopt for any other name.
std::optional<std::pair<std::string, std::string>> ParseEntryName(const std::string& name) {
  if (name.size() != 64 + 1 + 32 || name[64] != '-' || !IsHex(std::string_view(name).substr(0, 64)) ||
      !IsHex(std::string_view(name).substr(65)))
    return std::nullopt;
  std::string xxh(16, '\0');
  for (size_t i = 0; i < 16; ++i)
    xxh[i] = static_cast<char>(std::stoi(name.substr(65 + 2 * i, 2), nullptr, 16));
  return std::pair{name.substr(0, 64), xxh};
}

}  // namespace

CachedFileReader::CachedFileReader(FileCache* cache, int fd, const Digest& sha256, uint64_t size,
                                   std::string xxh128)
    : cache_(cache), fd_(fd), sha256_(sha256), size_(size), xxh128_(std::move(xxh128)) {}

CachedFileReader::~CachedFileReader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
}

Status CachedFileReader::ReadAndHash(uint64_t pos, char* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::pread(fd_, out + got, n - got, static_cast<off_t>(pos + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      return IOError("reading the cached copy: " + std::string(r < 0 ? std::strerror(errno) : "short"));
    got += static_cast<size_t>(r);
  }
  hash_.Update(std::string_view(out, n));
  if (pos + n == size_ && hash_.Finish() != xxh128_) {
    return Corruption("the cached copy of " + sha256_.ToString() +
                      " is damaged (its checksum does not match)");
  }
  return OkStatus();
}

StatusOr<std::string> CachedFileReader::ReadPiece(uint64_t pos) {
  std::string piece(std::min(kPiece, size_ - pos), '\0');
  DS_RETURN_IF_ERROR(ReadAndHash(pos, piece.data(), piece.size()));
  return piece;
}

void CachedFileReader::HashAll() {
  std::string buf(std::min(kPiece, size_), '\0');
  Status verdict = size_ == 0 ? ReadAndHash(0, buf.data(), 0) : OkStatus();
  for (uint64_t pos = 0; pos < size_ && verdict.ok();) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    const size_t n = std::min(kPiece, size_ - pos);
    verdict = ReadAndHash(pos, buf.data(), n);
    pos += n;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    verdict_ = verdict;
    hashed_ = true;
  }
  cv_.notify_all();
}

Status CachedFileReader::Clear(uint64_t end) {
  if (!thread_.joinable()) thread_ = std::thread([this] { HashAll(); });
  if (end < size_) return OkStatus();
  Status verdict;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return hashed_; });
    verdict = verdict_;
  }
  if (!verdict.ok()) cache_->Drop(sha256_);
  return verdict;
}

void CachedFileReader::ReadAhead() {
  for (uint64_t pos = 0; pos < size_;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || ready_.size() < 2; });
      if (stop_) return;
    }
    StatusOr<std::string> piece = ReadPiece(pos);
    const bool ok = piece.ok();
    if (ok) pos += piece->size();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.push_back(std::move(piece));
    }
    cv_.notify_all();
    if (!ok) return;
  }
}

StatusOr<std::string> CachedFileReader::Next() {
  if (!failed_.ok()) return failed_;
  if (handed_ == size_) return std::string();
  if (!thread_.joinable()) thread_ = std::thread([this] { ReadAhead(); });
  StatusOr<std::string> piece = std::string();
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !ready_.empty(); });
    piece = std::move(ready_.front());
    ready_.pop_front();
  }
  cv_.notify_all();
  if (!piece.ok()) {
    failed_ = piece.status();
    cache_->Drop(sha256_);
    return failed_;
  }
  handed_ += piece->size();
  return piece;
}

CacheFill::CacheFill(FileCache* cache, int fd, std::string temp_path, const Digest& sha256, uint64_t size)
    : cache_(cache), fd_(fd), temp_path_(std::move(temp_path)), sha256_(sha256), size_(size) {}

CacheFill::~CacheFill() {
  Abandon();
}

void CacheFill::Abandon() {
  if (fd_ < 0) return;
  ::close(std::exchange(fd_, -1));
  Discard();
}

void CacheFill::Discard() {
  ::unlink(temp_path_.c_str());
  cache_->EndFill(sha256_);
}

void CacheFill::Append(std::string_view piece) {
  if (fd_ < 0) return;
  hash_.Update(piece);
  while (!piece.empty()) {
    const ssize_t n = ::write(fd_, piece.data(), piece.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || written_ + static_cast<uint64_t>(n) > size_) return Abandon();
    written_ += static_cast<uint64_t>(n);
    piece.remove_prefix(static_cast<size_t>(n));
  }
}

void CacheFill::Commit(const Digest& sha256) {
  if (fd_ < 0) return;
  if (written_ != size_ || sha256 != sha256_) return Abandon();
  if (::close(std::exchange(fd_, -1)) != 0) return Discard();
  cache_->Publish(sha256_, size_, temp_path_, hash_.Finish());
  cache_->EndFill(sha256_);
}

StatusOr<std::unique_ptr<FileCache>> FileCache::Open(const std::string& dir, uint64_t capacity) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return IOError("cannot create the file cache directory: " + ec.message());
  std::unique_ptr<FileCache> cache(new FileCache(dir, capacity));
  // Oldest first by modification time (a hit touches its entry), so the clock keeps the order of use.
  struct Found {
    fs::file_time_type time;
    std::string hex, xxh128;
    uint64_t size;
    bool operator<(const Found& o) const { return time < o.time; }
  };
  std::vector<Found> found;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::error_code fe;
    auto parsed = ParseEntryName(name);
    // A fill cut short by a crash, an entry of the first format (named by its sha256 alone, with a
    // trailer), or something that is not ours: the cache is rebuilt as it is used.
    if (!parsed || !e.is_regular_file(fe)) {
      fs::remove_all(e.path(), fe);
      continue;
    }
    found.push_back({e.last_write_time(fe), parsed->first, parsed->second, e.file_size(fe)});
  }
  if (ec) return IOError("cannot list the file cache directory: " + ec.message());
  std::stable_sort(found.begin(), found.end());
  std::lock_guard<std::mutex> lock(cache->mu_);
  for (const Found& f : found) {
    if (auto it = cache->entries_.find(f.hex); it != cache->entries_.end()) cache->RemoveLocked(it);
    cache->entries_[f.hex] = {f.size, ++cache->clock_, f.xxh128};
    cache->bytes_ += f.size;
  }
  cache->EvictLocked();
  return cache;
}

std::string FileCache::PathOf(const std::string& hex, const std::string& xxh128) const {
  return dir_ + "/" + hex + "-" + HexEncode(xxh128);
}

std::unique_ptr<CachedFileReader> FileCache::Find(const Digest& sha256, uint64_t size) {
  const std::string hex = sha256.Hex();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(hex);
  if (it == entries_.end() || it->second.size != size) return nullptr;
  const int fd = ::open(PathOf(hex, it->second.xxh128).c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != size) {
    if (fd >= 0) ::close(fd);  // removed, cut short or grown behind our back: forget it
    RemoveLocked(it);
    return nullptr;
  }
  it->second.last_use = ++clock_;
  ::futimens(fd, nullptr);  // the order of use survives a restart
  return std::make_unique<CachedFileReader>(this, fd, sha256, size, it->second.xxh128);
}

std::unique_ptr<CacheFill> FileCache::Begin(const Digest& sha256, uint64_t size) {
  const std::string hex = sha256.Hex();
  std::lock_guard<std::mutex> lock(mu_);
  if (capacity_ == 0 || size > capacity_ || entries_.count(hex) || filling_.count(hex)) return nullptr;
  const std::string temp = dir_ + "/" + std::string(kTempPrefix) + hex;
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return nullptr;
  filling_.insert(hex);
  return std::make_unique<CacheFill>(this, fd, temp, sha256, size);
}

void FileCache::Adopt(const std::string& path, const Digest& sha256, uint64_t size,
                      const std::string& xxh128) {
  std::string temp;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (capacity_ == 0 || size > capacity_ || entries_.count(sha256.Hex())) return;
    temp = dir_ + "/" + std::string(kTempPrefix) + "adopt-" + std::to_string(++adopted_);
  }
  struct stat st {};
  if (::link(path.c_str(), temp.c_str()) != 0)
    return;  // another file system, say: the first download fills it
  if (::stat(temp.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != size) {
    ::unlink(temp.c_str());
    return;
  }
  Publish(sha256, size, temp, xxh128);
}

void FileCache::Drop(const Digest& sha256) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(sha256.Hex());
  if (it != entries_.end()) RemoveLocked(it);
}

uint64_t FileCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

size_t FileCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

void FileCache::RemoveLocked(std::map<std::string, Entry>::iterator it) {
  ::unlink(PathOf(it->first, it->second.xxh128).c_str());
  bytes_ -= it->second.size;
  entries_.erase(it);
}

void FileCache::EvictLocked() {
  while (bytes_ > capacity_ && !entries_.empty()) {
    RemoveLocked(std::min_element(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
      return a.second.last_use < b.second.last_use;
    }));
  }
}

void FileCache::Publish(const Digest& sha256, uint64_t size, const std::string& temp_path,
                        const std::string& xxh128) {
  const std::string hex = sha256.Hex();
  std::lock_guard<std::mutex> lock(mu_);
  if (entries_.count(hex) != 0 || ::rename(temp_path.c_str(), PathOf(hex, xxh128).c_str()) != 0) {
    ::unlink(temp_path.c_str());
    return;
  }
  entries_[hex] = {size, ++clock_, xxh128};
  bytes_ += size;
  EvictLocked();
}

void FileCache::EndFill(const Digest& sha256) {
  std::lock_guard<std::mutex> lock(mu_);
  filling_.erase(sha256.Hex());
}

uint64_t AutoFileCacheBytes(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  if (ec) return 0;
  while (!fs::exists(p, ec) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
  struct statvfs st {};
  if (::statvfs(p.c_str(), &st) != 0) return 0;
  const uint64_t total = uint64_t{st.f_blocks} * st.f_frsize, free = uint64_t{st.f_bavail} * st.f_frsize;
  return std::min(total / 10, free / 2);
}

}  // namespace deltastore

#include "service/file_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "common/endian.h"

namespace deltastore {
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kPiece = uint64_t{4} << 20;
constexpr std::string_view kTempPrefix = "tmp-";
// An entry's trailer (docs/http_api.md, "File cache entries"): magic, format version, the size of the
// bytes before it, their XXH3-128.
constexpr std::string_view kMagic = "DSFC";
constexpr uint32_t kEntryVersion = 1;
constexpr size_t kTrailerSize = 32;

std::string Trailer(uint64_t size, const std::string& xxh128) {
  std::string t(kMagic);
  PutLE(&t, kEntryVersion, 4);
  PutLE(&t, size, 8);
  return t + xxh128;
}

// The XXH3-128 an entry's trailer records, when the open file `fd` ends with a trailer of this format
// version that counts the bytes before it; their number goes to `found`.
std::optional<std::string> ReadTrailer(int fd, uint64_t* found) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < kTrailerSize) return std::nullopt;
  const uint64_t size = static_cast<uint64_t>(st.st_size) - kTrailerSize;
  char t[kTrailerSize];
  if (::pread(fd, t, kTrailerSize, static_cast<off_t>(size)) != static_cast<ssize_t>(kTrailerSize))
    return std::nullopt;
  if (std::string_view(t, 4) != kMagic || GetLE(t + 4, 4) != kEntryVersion || GetLE(t + 8, 8) != size)
    return std::nullopt;
  *found = size;
  return std::string(t + 16, 16);
}

bool IsEntryName(const std::string& name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
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

CacheFill::CacheFill(FileCache* cache, int fd, std::string temp_path, std::optional<Digest> named,
                     uint64_t size)
    : cache_(cache), fd_(fd), temp_path_(std::move(temp_path)), named_(named), size_(size) {}

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
  cache_->EndFill(named_);
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
  if (written_ != size_ || (named_ && *named_ != sha256)) return Abandon();
  const std::string trailer = Trailer(size_, hash_.Finish());
  const bool wrote = ::write(fd_, trailer.data(), trailer.size()) == static_cast<ssize_t>(trailer.size());
  if (::close(std::exchange(fd_, -1)) != 0 || !wrote) return Discard();
  cache_->Publish(sha256, size_, temp_path_, named_.has_value());
}

StatusOr<std::unique_ptr<FileCache>> FileCache::Open(const std::string& dir, uint64_t capacity) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return IOError("cannot create the file cache directory: " + ec.message());
  std::unique_ptr<FileCache> cache(new FileCache(dir, capacity));
  // Oldest first by modification time (a hit touches its entry), so the clock keeps the order of use.
  std::vector<std::pair<fs::file_time_type, std::pair<std::string, uint64_t>>> found;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::error_code fe;
    if (name.starts_with(kTempPrefix) || !IsEntryName(name) || !e.is_regular_file(fe)) {
      fs::remove_all(e.path(), fe);  // a fill cut short by a crash, or something that is not ours
      continue;
    }
    // Entries of another format version, or cut short, are dropped: the cache is rebuilt as it is used.
    const int fd = ::open(e.path().c_str(), O_RDONLY | O_CLOEXEC);
    uint64_t size = 0;
    const bool valid = fd >= 0 && ReadTrailer(fd, &size).has_value();
    if (fd >= 0) ::close(fd);
    if (!valid) {
      fs::remove(e.path(), fe);
      continue;
    }
    found.push_back({e.last_write_time(fe), {name, size}});
  }
  if (ec) return IOError("cannot list the file cache directory: " + ec.message());
  std::sort(found.begin(), found.end());
  std::lock_guard<std::mutex> lock(cache->mu_);
  for (const auto& [time, entry] : found) {
    cache->entries_[entry.first] = {entry.second, ++cache->clock_};
    cache->bytes_ += entry.second;
  }
  cache->EvictLocked();
  return cache;
}

std::unique_ptr<CachedFileReader> FileCache::Find(const Digest& sha256, uint64_t size) {
  const std::string hex = sha256.Hex();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(hex);
  if (it == entries_.end() || it->second.size != size) return nullptr;
  const int fd = ::open(PathOf(hex).c_str(), O_RDONLY | O_CLOEXEC);
  uint64_t found = 0;
  std::optional<std::string> xxh128 = fd >= 0 ? ReadTrailer(fd, &found) : std::nullopt;
  if (!xxh128 || found != size) {  // removed or damaged behind our back: forget it
    if (fd >= 0) ::close(fd);
    ::unlink(PathOf(hex).c_str());
    bytes_ -= it->second.size;
    entries_.erase(it);
    return nullptr;
  }
  it->second.last_use = ++clock_;
  ::futimens(fd, nullptr);  // the order of use survives a restart
  return std::make_unique<CachedFileReader>(this, fd, sha256, size, std::move(*xxh128));
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

std::unique_ptr<CacheFill> FileCache::BeginUnnamed(uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  if (capacity_ == 0 || size > capacity_) return nullptr;
  const std::string temp = dir_ + "/" + std::string(kTempPrefix) + "unnamed-" + std::to_string(++unnamed_);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return nullptr;
  return std::make_unique<CacheFill>(this, fd, temp, std::nullopt, size);
}

void FileCache::Drop(const Digest& sha256) {
  const std::string hex = sha256.Hex();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(hex);
  if (it == entries_.end()) return;
  ::unlink(PathOf(hex).c_str());
  bytes_ -= it->second.size;
  entries_.erase(it);
}

uint64_t FileCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

size_t FileCache::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

void FileCache::EvictLocked() {
  while (bytes_ > capacity_ && !entries_.empty()) {
    auto oldest = std::min_element(entries_.begin(), entries_.end(), [](const auto& a, const auto& b) {
      return a.second.last_use < b.second.last_use;
    });
    ::unlink(PathOf(oldest->first).c_str());
    bytes_ -= oldest->second.size;
    entries_.erase(oldest);
  }
}

void FileCache::Publish(const Digest& sha256, uint64_t size, const std::string& temp_path, bool named) {
  const std::string hex = sha256.Hex();
  std::lock_guard<std::mutex> lock(mu_);
  if (named) filling_.erase(hex);  // an unnamed fill of the same bytes leaves a named one's reservation
  if (entries_.count(hex) != 0 || ::rename(temp_path.c_str(), PathOf(hex).c_str()) != 0) {
    ::unlink(temp_path.c_str());
    return;
  }
  entries_[hex] = {size, ++clock_};
  bytes_ += size;
  EvictLocked();
}

void FileCache::EndFill(const std::optional<Digest>& named) {
  if (!named) return;
  std::lock_guard<std::mutex> lock(mu_);
  filling_.erase(named->Hex());
}

}  // namespace deltastore

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

namespace deltastore {
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kPiece = uint64_t{4} << 20;
constexpr std::string_view kTempPrefix = "tmp-";

bool IsEntryName(const std::string& name) {
  return name.size() == 64 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

CachedFileReader::CachedFileReader(FileCache* cache, int fd, const Digest& sha256, uint64_t size)
    : cache_(cache), fd_(fd), sha256_(sha256), size_(size) {}

CachedFileReader::~CachedFileReader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  ::close(fd_);
}

StatusOr<std::string> CachedFileReader::ReadPiece(uint64_t pos) {
  std::string piece(std::min(kPiece, size_ - pos), '\0');
  size_t got = 0;
  while (got < piece.size()) {
    const ssize_t n = ::pread(fd_, piece.data() + got, piece.size() - got, static_cast<off_t>(pos + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return IOError("reading the cached copy: " + std::string(n < 0 ? std::strerror(errno) : "short"));
    got += static_cast<size_t>(n);
  }
  hash_.Update(piece);
  if (pos + piece.size() == size_ && hash_.Finish() != sha256_) {
    return Corruption("the cached copy of " + sha256_.ToString() + " does not match its sha256");
  }
  return piece;
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
  while (!piece.empty()) {
    const ssize_t n = ::write(fd_, piece.data(), piece.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || written_ + static_cast<uint64_t>(n) > size_) return Abandon();
    written_ += static_cast<uint64_t>(n);
    piece.remove_prefix(static_cast<size_t>(n));
  }
}

void CacheFill::Commit() {
  if (fd_ < 0) return;
  const bool complete = written_ == size_;
  if (::close(std::exchange(fd_, -1)) != 0 || !complete) return Discard();
  cache_->Publish(sha256_, size_, temp_path_);
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
    found.push_back({e.last_write_time(fe), {name, e.file_size(fe)}});
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
  if (fd < 0) {  // removed behind our back: forget it
    bytes_ -= it->second.size;
    entries_.erase(it);
    return nullptr;
  }
  it->second.last_use = ++clock_;
  ::futimens(fd, nullptr);  // the order of use survives a restart
  return std::make_unique<CachedFileReader>(this, fd, sha256, size);
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

void FileCache::Publish(const Digest& sha256, uint64_t size, const std::string& temp_path) {
  const std::string hex = sha256.Hex();
  std::lock_guard<std::mutex> lock(mu_);
  filling_.erase(hex);
  if (::rename(temp_path.c_str(), PathOf(hex).c_str()) != 0) {
    ::unlink(temp_path.c_str());
    return;
  }
  entries_[hex] = {size, ++clock_};
  bytes_ += size;
  EvictLocked();
}

void FileCache::EndFill(const Digest& sha256) {
  std::lock_guard<std::mutex> lock(mu_);
  filling_.erase(sha256.Hex());
}

}  // namespace deltastore

#include "service/uploads.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/clock.h"

namespace deltastore {

using json = nlohmann::json;
namespace fs = std::filesystem;

class SpoolWriter : public UploadWriter {
 public:
  SpoolWriter(Uploads* uploads, UploadRecord upload, int fd)
      : uploads_(uploads),
        upload_(std::move(upload)),
        read_(upload_.ToJson().dump()),
        fd_(fd),
        start_(upload_.offset),
        offset_(upload_.offset) {}
  ~SpoolWriter() override {
    if (!committed_) (void)Commit();
    if (fd_ >= 0) ::close(fd_);
  }
  Status Write(std::string_view piece) override {
    while (!piece.empty()) {
      ssize_t n = ::pwrite(fd_, piece.data(), piece.size(), static_cast<off_t>(offset_));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        if (errno == ENOSPC) return DiskFull("disk full while writing the upload");
        return IOError(std::string("writing upload: ") + std::strerror(errno));
      }
      offset_ += n;
      piece.remove_prefix(n);
    }
    return OkStatus();
  }
  StatusOr<json> Commit() override {
    if (committed_) return upload_.ToJson();
    committed_ = true;
    Status s;
    if (::fdatasync(fd_) != 0) s = IOError(std::string("fsync of upload failed: ") + std::strerror(errno));
    MetaBatch batch;
    if (s.ok()) {
      s = uploads_->parts_.Store(upload_.id, uploads_->s_->SpoolPath(upload_.id), start_, offset_, &batch);
    }
    if (s.ok()) {
      upload_.offset = offset_;
      upload_.updated_at = NowIso();
      // Conditional: another node sealing, deleting or writing this upload meanwhile wins (records are
      // written by ToJson alone, so the text read is the text stored).
      batch.Expect(ns::kUploads, upload_.id, read_);
      batch.Put(ns::kUploads, upload_.id, upload_.ToJson().dump());
      s = uploads_->s_->meta()->Commit(batch);
    }
    uploads_->Release(upload_.id);
    if (!s.ok()) return s;
    return upload_.ToJson();
  }

 private:
  Uploads* uploads_;
  UploadRecord upload_;
  const std::string read_;  // the record as this request found it
  int fd_;
  uint64_t start_;  // the committed offset this request appends at
  uint64_t offset_;
  bool committed_ = false;
};

StatusOr<UploadRecord> Uploads::Create() {
  size_t open = 0;
  DS_RETURN_IF_ERROR(s_->meta()->Scan(ns::kUploads, "", "", [&](std::string_view, std::string_view v) {
    auto u = UploadRecord::Parse(v);
    if (u.ok() && !u->sealed) ++open;
    return true;
  }));
  if (open >= s_->options.max_open_uploads)
    return TooManyUploads("too many open uploads (" + std::to_string(open) + "); seal or delete some first");
  UploadRecord u;
  u.id = NewId();
  u.created_at = NowIso();
  int fd = ::open(s_->SpoolPath(u.id).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return IOError("cannot create spool file: " + std::string(std::strerror(errno)));
  ::close(fd);
  DS_RETURN_IF_ERROR(s_->meta()->Put(ns::kUploads, u.id, u.ToJson().dump()));
  return u;
}

StatusOr<UploadRecord> Uploads::Get(const std::string& id) {
  auto u = LoadRecord<UploadRecord>(s_->meta(), ns::kUploads, id);
  if (!u.ok() && u.status().code() == StatusCode::kNotFound)
    return UploadUnknown("upload " + id + " not found");
  return u;
}

StatusOr<UploadRecord> Uploads::GetSealed(const std::string& id, std::string_view what) {
  DS_ASSIGN_OR_RETURN(UploadRecord u, Get(id));
  if (!u.sealed) return UploadNotSealed(std::string(what) + " " + id + " is not sealed");
  return u;
}

Status Uploads::Claim(const std::string& id, Holder holder) {
  constexpr auto kClaimWait = std::chrono::seconds(30);
  std::unique_lock<std::mutex> lock(mu_);
  auto free_or_writing = [&] {
    auto it = busy_.find(id);
    return it == busy_.end() || it->second == Holder::kWriter;
  };
  if (!released_.wait_for(lock, kClaimWait, free_or_writing) || busy_.count(id))
    return UploadBusy("another request is writing upload " + id);
  busy_.emplace(id, holder);
  return OkStatus();
}

void Uploads::Release(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_.erase(id);
  }
  released_.notify_all();
}

StatusOr<std::unique_ptr<UploadWriter>> Uploads::Append(const std::string& id,
                                                        std::optional<uint64_t> start) {
  DS_RETURN_IF_ERROR(Claim(id, Holder::kWriter));
  auto release = [&](Status s) {
    Release(id);
    return s;
  };
  auto u = Get(id);
  if (!u.ok()) return release(u.status());
  if (u->sealed) return release(UploadSealed("upload " + id + " is sealed"));
  if (start && *start != u->offset) {
    return release(RangeInvalid("range starts at " + std::to_string(*start) +
                                " but the upload's committed offset is " + std::to_string(u->offset)));
  }
  // Earlier pieces may have gone to another node: this node's spool file gets them first.
  if (Status s = parts_.Fetch(id, s_->SpoolPath(id), u->offset); !s.ok()) return release(s);
  int fd = ::open(s_->SpoolPath(id).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return release(IOError("cannot open spool file of upload " + id));
  // Bytes past the committed offset are leftovers of an interrupted request: drop them.
  if (::ftruncate(fd, static_cast<off_t>(u->offset)) != 0) {
    ::close(fd);
    return release(IOError("cannot truncate spool file of upload " + id));
  }
  return std::unique_ptr<UploadWriter>(new SpoolWriter(this, std::move(*u), fd));
}

StatusOr<Digest> Uploads::HashSpool(const UploadRecord& u) {
  int fd = ::open(s_->SpoolPath(u.id).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return DataLoss("spool file of upload " + u.id + " is missing");
  Sha256 hash;
  std::string buf(1 << 20, '\0');
  uint64_t pos = 0;
  while (pos < u.offset) {
    ssize_t n =
        ::pread(fd, buf.data(), std::min<uint64_t>(buf.size(), u.offset - pos), static_cast<off_t>(pos));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return DataLoss("spool file of upload " + u.id + " is shorter than its committed offset");
    }
    hash.Update(buf.data(), n);
    pos += n;
  }
  ::close(fd);
  return hash.Finish();
}

StatusOr<UploadRecord> Uploads::Seal(const std::string& id, const std::string& digest_text) {
  auto expected = Digest::Parse(digest_text);
  if (!expected.ok()) return DigestInvalid("digest must be sha256:<64 hex>");
  DS_RETURN_IF_ERROR(Claim(id, Holder::kSealer));
  ClaimHeld held{this, id};
  DS_ASSIGN_OR_RETURN(UploadRecord u, Get(id));
  if (u.sealed) {
    if (u.digest == expected->ToString()) return u;
    return UploadSealed("upload " + id + " is already sealed");
  }
  // Hashing takes seconds for a large upload: only this upload is claimed meanwhile.
  DS_RETURN_IF_ERROR(parts_.Fetch(id, s_->SpoolPath(id), u.offset));
  DS_ASSIGN_OR_RETURN(Digest actual, HashSpool(u));
  if (actual != *expected) {
    return DigestInvalid("digest mismatch: the " + std::to_string(u.offset) + " bytes received hash to " +
                         actual.ToString());
  }
  MetaBatch batch;
  batch.Expect(ns::kUploads, id,
               u.ToJson().dump());  // unchanged since it was hashed (another node may write)
  u.sealed = true;
  u.digest = actual.ToString();
  u.size = u.offset;
  u.updated_at = NowIso();
  batch.Put(ns::kUploads, id, u.ToJson().dump());
  DS_RETURN_IF_ERROR(s_->meta()->Commit(batch));
  return u;
}

Status Uploads::Delete(const std::string& id) {
  DS_RETURN_IF_ERROR(Claim(id, Holder::kSealer));
  ClaimHeld held{this, id};
  DS_RETURN_IF_ERROR(Get(id).status());
  MetaBatch batch;
  DS_RETURN_IF_ERROR(Consume(id, &batch));
  DS_RETURN_IF_ERROR(s_->meta()->Commit(batch));
  std::error_code ec;
  fs::remove(s_->SpoolPath(id), ec);
  return OkStatus();
}

StatusOr<std::string> Uploads::Spool(const UploadRecord& u) {
  std::string path = s_->SpoolPath(u.id);
  DS_RETURN_IF_ERROR(parts_.Fetch(u.id, path, u.offset));
  return path;
}

Status Uploads::Consume(const std::string& id, MetaBatch* batch) {
  DS_RETURN_IF_ERROR(parts_.Remove(id, batch));
  batch->Delete(ns::kUploads, id);
  return OkStatus();
}

void Uploads::RemoveOrphanSpools() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(s_->options.data_dir) / "uploads", ec)) {
    auto rec = s_->meta()->Get(ns::kUploads, entry.path().filename().string());
    if (!rec.ok() && rec.status().code() == StatusCode::kNotFound) fs::remove(entry.path(), ec);
  }
}

}  // namespace deltastore

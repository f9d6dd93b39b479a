// Resumable uploads: a spool file per upload under <data dir>/uploads and its record (offset, state);
// with chunks on S3, each committed range is also stored there, so any node can go on with the upload.
// Writers append to the spool and commit the offset; sealing hashes the spool outside every lock and
// checks the digest the client gave. One upload has at most one writer or sealer at a time.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "service/records.h"
#include "service/registry_state.h"
#include "service/upload_parts.h"

namespace deltastore {

// Appends the body of one PATCH to an upload's spool file; Commit makes the bytes durable and moves
// the committed offset. Destroying an uncommitted writer commits what arrived (a dropped connection
// keeps its bytes, so the client can resume from the offset).
class UploadWriter {
 public:
  virtual ~UploadWriter() = default;
  virtual Status Write(std::string_view piece) = 0;
  virtual StatusOr<nlohmann::json> Commit() = 0;
};

class Uploads {
 public:
  explicit Uploads(RegistryState* state) : s_(state), parts_(state) {}

  StatusOr<UploadRecord> Create();
  // BLOB_UPLOAD_UNKNOWN when absent.
  StatusOr<UploadRecord> Get(const std::string& id);
  // The upload, which must be sealed (UPLOAD_NOT_SEALED); `what` names it in the message.
  StatusOr<UploadRecord> GetSealed(const std::string& id, std::string_view what);
  // `start`: the Content-Range start the client claims (must equal the committed offset).
  StatusOr<std::unique_ptr<UploadWriter>> Append(const std::string& id, std::optional<uint64_t> start);
  StatusOr<UploadRecord> Seal(const std::string& id, const std::string& digest);
  Status Delete(const std::string& id);
  // Removes spool files whose record is gone (a crash between a commit and the unlink).
  void RemoveOrphanSpools();
  // The path of the upload's spool file on this node, complete up to its offset (fetched from the
  // object store when another node received the bytes; service/upload_parts.h).
  StatusOr<std::string> Spool(const UploadRecord& u);
  // Adds to `batch` the removal of a consumed upload (its record and stored pieces).
  Status Consume(const std::string& id, MetaBatch* batch);

 private:
  friend class SpoolWriter;
  // Claims the upload for one request. A request that finds it held by a writer (a PATCH whose body
  // may take minutes) is refused with UPLOAD_BUSY; one that finds it held by a sealer or a deleter
  // (bounded work) waits for it, up to kClaimWait. Release gives the claim back.
  enum class Holder { kWriter, kSealer };
  Status Claim(const std::string& id, Holder holder);
  void Release(const std::string& id);
  // Releases a claim when it goes out of scope.
  struct ClaimHeld {
    Uploads* uploads;
    const std::string& id;
    ~ClaimHeld() { uploads->Release(id); }
  };
  StatusOr<Digest> HashSpool(const UploadRecord& u);

  RegistryState* s_;
  UploadParts parts_;
  std::mutex mu_;  // busy_ only
  std::condition_variable released_;
  std::map<std::string, Holder> busy_;  // uploads with an active writer, sealer or deleter
};

}  // namespace deltastore

#include "api/tensor_routes.h"

#include <algorithm>

#include "api/byte_ranges.h"
#include "service/registry.h"
#include "service/tensor_subset.h"

namespace deltastore::api {

namespace {
constexpr uint64_t kPiece = 1u << 20;
}

Response DownloadTensors(Registry* reg, const Request& req) {
  auto names = ParseTensorList(req.Query("tensors"));
  if (!names.ok()) return Response::Error(names.status());
  auto v = reg->OpenForRead(req.params[0], req.params[1]);
  if (!v.ok()) return Response::Error(v.status());
  const FileEntry* file = v->reader->manifest().FindFile(req.params[2]);
  if (file == nullptr) return Response::Error(FileUnknown("version has no file " + req.params[2]));
  auto built = TensorSubset::Build(
      reg->chunks(), v->reader->manifest(), [reg](const Digest& d) { return reg->LoadManifest(d); }, *file,
      *names);
  if (!built.ok()) return Response::Error(built.status());
  std::shared_ptr<const TensorSubset> subset = std::move(*built);
  std::string etag = "\"" + subset->sha256().ToString() + "\"";
  Headers h = {{"content-type", "application/octet-stream"},
               {"docker-content-digest", subset->sha256().ToString()},
               {"x-deltastore-tensors", std::to_string(subset->tensors())},
               {"x-deltastore-chunks-read", std::to_string(subset->reads().chunks)},
               {"x-deltastore-stored-bytes-read", std::to_string(subset->reads().stored_bytes)}};
  return ServeBytes(req, std::move(h), subset->size(), etag, [subset](uint64_t begin, uint64_t end) {
    auto pos = std::make_shared<uint64_t>(begin);
    BodyProducer pieces = [subset, pos, end]() -> StatusOr<std::string> {
      if (*pos >= end) return std::string();
      DS_ASSIGN_OR_RETURN(std::string piece, subset->Read(*pos, std::min(kPiece, end - *pos)));
      *pos += piece.size();
      return piece;
    };
    return Body{std::move(pieces), nullptr};
  });
}

}  // namespace deltastore::api

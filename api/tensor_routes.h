// Per-tensor downloads on our own API: GET /v1/models/{model}/versions/{ref}/files/{path}?tensors=a,b
// (docs/http_api.md). routes.cc's file download hands requests with ?tensors= here.
#pragma once

#include "api/http.h"

namespace deltastore {
class Registry;
}

namespace deltastore::api {

// A safetensors file with only the named tensors of the file (service/tensor_subset.h), ETag the sha256
// of what is sent, Range and If-None-Match as for whole files; X-Deltastore-Chunks-Read and
// X-Deltastore-Stored-Bytes-Read tell what it read from the chunk store. req.params: model, ref, path.
Response DownloadTensors(Registry* registry, const Request& req);

}  // namespace deltastore::api

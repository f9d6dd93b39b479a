// The registry: models, versions, tags, uploads and jobs over the stores.
#pragma once

#include <memory>
#include <string>

#include "storage/stores.h"

namespace deltastore {

struct RegistryOptions {
  std::string data_dir;
};

class Registry {
 public:
  static StatusOr<std::unique_ptr<Registry>> Open(const RegistryOptions& options);
  ChunkStore* chunks() { return stores_.chunks.get(); }
  MetaStore* meta() { return stores_.meta.get(); }

 private:
  explicit Registry(Stores stores) : stores_(std::move(stores)) {}
  Stores stores_;
};

}  // namespace deltastore

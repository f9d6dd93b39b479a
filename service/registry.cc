#include "service/registry.h"

#include <filesystem>

namespace deltastore {

StatusOr<std::unique_ptr<Registry>> Registry::Open(const RegistryOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) return IOError("cannot create data dir " + options.data_dir + ": " + ec.message());
  DS_ASSIGN_OR_RETURN(Stores stores, OpenRocksStores({options.data_dir + "/db", true}));
  return std::unique_ptr<Registry>(new Registry(std::move(stores)));
}

}  // namespace deltastore

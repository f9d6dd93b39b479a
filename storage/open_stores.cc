// Opens the stores a registry was configured with: the embedded RocksDB (the default), or metadata on
// PostgreSQL and/or chunks on S3-compatible object storage.
#include <string>
#include <utility>

#include "storage/stores.h"

namespace deltastore {

StatusOr<Stores> OpenStores(const StoreLocations& where) {
  const bool pg_meta = !where.meta_url.empty();
  if (pg_meta && !where.meta_url.starts_with("postgresql://") && !where.meta_url.starts_with("postgres://")) {
    return InvalidArgument("--meta-store must be a postgresql:// URL (or empty for the embedded store)");
  }
  Stores stores;
  if (pg_meta) {
    DS_ASSIGN_OR_RETURN(auto meta, OpenPgMetaStore({where.meta_url}));
    stores.meta = std::move(meta);
  }
  // Chunks stay in the embedded RocksDB (then the metadata too, unless it is on PostgreSQL).
  DS_ASSIGN_OR_RETURN(Stores embedded, OpenRocksStores({where.rocks_dir, where.sync_writes}));
  stores.chunks = embedded.chunks;
  if (!pg_meta) stores.meta = embedded.meta;
  return stores;
}

}  // namespace deltastore

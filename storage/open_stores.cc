// Opens the stores a registry was configured with: the embedded RocksDB (the default), or metadata on
// PostgreSQL and/or chunks on S3-compatible object storage.
#include <string>
#include <utility>

#include "storage/s3_client.h"
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
  // Whatever is not on a server is in the embedded RocksDB (opened only when something is).
  if (!pg_meta || where.chunk_url.empty()) {
    DS_ASSIGN_OR_RETURN(Stores embedded, OpenRocksStores({where.rocks_dir, where.sync_writes}));
    if (!pg_meta) stores.meta = embedded.meta;
    stores.chunks = embedded.chunks;
  }
  if (!where.chunk_url.empty()) {
    DS_ASSIGN_OR_RETURN(S3Options s3, ParseS3Url(where.chunk_url));
    DS_ASSIGN_OR_RETURN(stores.chunks, OpenS3ChunkStore(s3, stores.meta));
    DS_ASSIGN_OR_RETURN(stores.objects, S3Client::Open(s3));
  }
  return stores;
}

}  // namespace deltastore

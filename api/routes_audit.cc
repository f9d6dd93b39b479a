// The storage audit as JSON, Prometheus metrics and the /ui page.
#include "api/metrics.h"
#include "api/route_groups.h"
#include "api/ui.h"
#include "service/registry.h"

namespace deltastore::api {

using json = nlohmann::json;

namespace {

Response MetricsPage(Registry* reg, const Metrics& metrics) {
  PromWriter w;
  metrics.Render(&w);
  const Registry::NodeInfo node = reg->Node();
  w.Family("deltastore_node_info", "gauge",
           "This node (the job figures are this node's; the audit figures are the shared store's).");
  w.Sample("deltastore_node_info",
           {{"node", node.node}, {"meta_store", node.meta_store}, {"chunk_store", node.chunk_store}}, 1);
  Registry::JobCounts jobs = reg->Jobs();
  w.Family("deltastore_jobs_queued", "gauge", "Compression jobs waiting for a worker.");
  w.Sample("deltastore_jobs_queued", {}, double(jobs.queued));
  w.Family("deltastore_jobs_running", "gauge", "Compression jobs running.");
  w.Sample("deltastore_jobs_running", {}, double(jobs.running));
  auto audit = reg->Audit();
  w.Family("deltastore_audit_up", "gauge", "1 when the storage audit below could be computed.");
  w.Sample("deltastore_audit_up", {}, audit.ok() ? 1 : 0);
  if (audit.ok()) {
    const AuditReport& a = **audit;
    w.Family("deltastore_chunk_store_bytes", "gauge", "Encoded bytes in the chunk store.");
    w.Sample("deltastore_chunk_store_bytes", {}, double(a.chunk_store_bytes));
    w.Family("deltastore_chunk_store_chunks", "gauge", "Chunks in the chunk store.");
    w.Sample("deltastore_chunk_store_chunks", {}, double(a.chunk_store_chunks));
    w.Family("deltastore_models", "gauge", "Models with at least one version.");
    w.Sample("deltastore_models", {}, double(a.models.size()));
    w.Family("deltastore_versions", "gauge", "Stored versions.");
    w.Sample("deltastore_versions", {}, double(a.total.versions));
    w.Family("deltastore_logical_bytes", "gauge", "Bytes users uploaded, over every stored version.");
    w.Sample("deltastore_logical_bytes", {}, double(a.total.logical_bytes));
    w.Family("deltastore_stored_bytes", "gauge",
             "Encoded bytes of the chunks the stored versions reference.");
    w.Sample("deltastore_stored_bytes", {}, double(a.total.stored_bytes));
    w.Family("deltastore_saved_bytes", "gauge",
             "Bytes saved, by kind (dedup, lossless, lossy); see docs/audit.md.");
    w.Sample("deltastore_saved_bytes", {{"kind", "dedup"}}, double(a.total.saved_dedup_bytes));
    w.Sample("deltastore_saved_bytes", {{"kind", "lossless"}}, double(a.total.saved_lossless_bytes));
    w.Sample("deltastore_saved_bytes", {{"kind", "lossy"}}, double(a.total.saved_lossy_bytes));
    w.Family("deltastore_model_logical_bytes", "gauge", "Bytes users uploaded, per model.");
    for (const auto& [m, f] : a.models)
      w.Sample("deltastore_model_logical_bytes", {{"model", m}}, double(f.logical_bytes));
    w.Family("deltastore_model_stored_bytes", "gauge",
             "Encoded bytes stored first by each model's versions.");
    for (const auto& [m, f] : a.models)
      w.Sample("deltastore_model_stored_bytes", {{"model", m}}, double(f.stored_bytes));
    w.Family("deltastore_model_saved_bytes", "gauge", "Bytes saved per model, by kind.");
    for (const auto& [m, f] : a.models) {
      w.Sample("deltastore_model_saved_bytes", {{"model", m}, {"kind", "dedup"}},
               double(f.saved_dedup_bytes));
      w.Sample("deltastore_model_saved_bytes", {{"model", m}, {"kind", "lossless"}},
               double(f.saved_lossless_bytes));
      w.Sample("deltastore_model_saved_bytes", {{"model", m}, {"kind", "lossy"}},
               double(f.saved_lossy_bytes));
    }
  }
  Response resp;
  resp.status = 200;
  resp.headers["content-type"] = kPrometheusContentType;
  resp.body = w.text();
  return resp;
}

}  // namespace

void AddAuditRoutes(Router* r, Registry* reg, const std::shared_ptr<Metrics>& metrics) {
  // Audit, metrics and the page.
  r->Add("GET", "/v1/audit", [reg](Request&) {
    auto a = reg->Audit();
    if (!a.ok()) return Response::Error(a.status());
    return JsonOk(200, (*a)->ToJson());
  });
  r->Add("GET", "/v1/audit/history", [reg](Request& req) {
    auto limit = Limit(req);
    if (!limit.ok()) return Response::Error(limit.status());
    return Reply(reg->AuditHistory(req.Query("after"), *limit));
  });
  r->Add("GET", "/v1/audit/models/{model}", [reg](Request& req) {
    auto limit = Limit(req);
    if (!limit.ok()) return Response::Error(limit.status());
    return Reply(reg->AuditModel(req.params[0], req.Query("after"), *limit));
  });
  r->Add("GET", "/v1/audit/models/{model}/versions/{ref}",
         [reg](Request& req) { return Reply(reg->AuditVersion(req.params[0], req.params[1])); });
  r->Add("GET", "/metrics", [reg, metrics](Request&) { return MetricsPage(reg, *metrics); });
  r->Add("GET", "/ui", [reg](Request&) {
    auto a = reg->Audit();
    if (!a.ok()) return Response::Error(a.status());
    auto history = reg->RecentAuditHistory(200);
    if (!history.ok()) return Response::Error(history.status());
    Response resp;
    resp.status = 200;
    resp.headers["content-type"] = "text/html; charset=utf-8";
    resp.headers["cache-control"] = "no-store";
    resp.body = RenderUiPage(**a, *history);
    return resp;
  });
}

}  // namespace deltastore::api

// Admin routes: garbage collection and bearer tokens.
#include "api/route_groups.h"
#include "service/registry.h"

namespace deltastore::api {

using json = nlohmann::json;

void AddAdminRoutes(Router* r, Registry* reg) {
  r->Add(
      "POST", "/v1/gc",
      [reg](Request&) {
        auto gc = reg->CollectGarbage();
        if (!gc.ok()) return Response::Error(gc.status());
        return JsonOk(200, json{{"chunks_deleted", gc->chunks_deleted}, {"bytes_freed", gc->bytes_freed}});
      },
      Scope::kAdmin);
  // Tokens (admin).
  r->Add(
      "POST", "/v1/tokens",
      [reg](Request& req) {
        json body = json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.is_object() || !body["scope"].is_string() ||
            (body.contains("name") && !body["name"].is_string())) {
          return Response::Error(
              BodyInvalid("body must be {\"name\": \"...\", \"scope\": \"read|write|admin\"}"));
        }
        auto scope = ParseScope(body["scope"].get<std::string>());
        if (!scope) return Response::Error(BodyInvalid("scope must be read, write or admin"));
        return Reply(reg->tokens().Create(body.value("name", ""), *scope), 201);
      },
      Scope::kAdmin);
  r->Add(
      "GET", "/v1/tokens", [reg](Request&) { return Reply(reg->tokens().List()); }, Scope::kAdmin);
  r->Add(
      "DELETE", "/v1/tokens/{id}",
      [reg](Request& req) { return NoContent(reg->tokens().Revoke(req.params[0])); }, Scope::kAdmin);
}

}  // namespace deltastore::api

#include "api/router.h"

namespace deltastore::api {
namespace {

std::vector<std::string> Split(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

int Hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool Decode(std::string_view in, bool plus_is_space, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = Hex(in[i + 1]);
      int lo = Hex(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (plus_is_space && in[i] == '+') {
      out->push_back(' ');
    } else {
      out->push_back(in[i]);
    }
  }
  return true;
}

bool MatchRoute(const std::vector<std::string>& pattern, const std::vector<std::string>& segs,
                std::vector<std::string>* params) {
  params->clear();
  for (size_t i = 0; i < pattern.size(); ++i) {
    const std::string& p = pattern[i];
    bool capture = p.size() > 2 && p.front() == '{' && p.back() == '}';
    if (capture && p.size() > 5 && p.compare(p.size() - 4, 4, "...}") == 0) {
      if (i >= segs.size()) return false;
      std::string rest;
      for (size_t j = i; j < segs.size(); ++j) rest += (j > i ? "/" : "") + segs[j];
      params->push_back(rest);
      return true;
    }
    if (i >= segs.size()) return false;
    if (capture) {
      params->push_back(segs[i]);
    } else if (p != segs[i]) {
      return false;
    }
  }
  return pattern.size() == segs.size();
}

// Handlers report expected failures as Status; anything thrown past them (a bug, an allocation
// failure) becomes a 500 here instead of ending the connection without an answer.
Response InternalError(const char* what) {
  return Response::Error(Internal(std::string("internal error: ") + what));
}

class GuardedConsumer : public BodyConsumer {
 public:
  explicit GuardedConsumer(std::unique_ptr<BodyConsumer> inner) : inner_(std::move(inner)) {}
  Status Write(std::string_view piece) override {
    try {
      return inner_->Write(piece);
    } catch (const std::exception& e) {
      return Internal(std::string("internal error: ") + e.what());
    }
  }
  Response Finish() override {
    try {
      return inner_->Finish();
    } catch (const std::exception& e) {
      return InternalError(e.what());
    }
  }
  void Abort() override {
    try {
      inner_->Abort();
    } catch (const std::exception&) {
    }
  }

 private:
  std::unique_ptr<BodyConsumer> inner_;
};

}  // namespace

bool ParseTarget(std::string_view target, std::string* path, std::map<std::string, std::string>* query) {
  size_t q = target.find('?');
  std::string_view raw_path = target.substr(0, q);
  // Decode per segment so an encoded '/' cannot change the route; a decoded segment may contain '/'
  // only inside "{name...}" captures, which rejoin with '/'.
  if (!Decode(raw_path, false, path)) return false;
  query->clear();
  if (q == std::string_view::npos) return true;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view kv = rest.substr(0, amp);
    size_t eq = kv.find('=');
    std::string k, v;
    if (!Decode(kv.substr(0, eq), true, &k)) return false;
    if (eq != std::string_view::npos && !Decode(kv.substr(eq + 1), true, &v)) return false;
    if (!k.empty()) (*query)[k] = v;
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return true;
}

static Scope DefaultScope(const std::string& method) {
  return method == "GET" || method == "HEAD" ? Scope::kRead : Scope::kWrite;
}

Router::Router() : authorizer_(std::make_shared<Authorizer>()) {}

void Router::Add(std::string method, std::string pattern, Handler handler, std::optional<Scope> scope) {
  Handler guarded = [h = std::move(handler), auth = authorizer_,
                     need = scope.value_or(DefaultScope(method))](Request& req) -> Response {
    try {
      if (*auth)
        if (Status s = (*auth)(req, need); !s.ok()) return Response::Error(s);
      return h(req);
    } catch (const std::exception& e) {
      return InternalError(e.what());
    }
  };
  auto segments = Split(pattern);
  routes_.push_back(
      {std::move(method), std::move(pattern), std::move(segments), std::move(guarded), nullptr});
}

void Router::AddStreaming(std::string method, std::string pattern, StreamingHandler handler,
                          std::optional<Scope> scope) {
  StreamingHandler guarded =
      [h = std::move(handler), auth = authorizer_,
       need = scope.value_or(DefaultScope(method))](Request& req) -> StatusOr<std::unique_ptr<BodyConsumer>> {
    try {
      if (*auth) DS_RETURN_IF_ERROR((*auth)(req, need));
      DS_ASSIGN_OR_RETURN(std::unique_ptr<BodyConsumer> c, h(req));
      return std::unique_ptr<BodyConsumer>(new GuardedConsumer(std::move(c)));
    } catch (const std::exception& e) {
      return Internal(std::string("internal error: ") + e.what());
    }
  };
  auto segments = Split(pattern);
  routes_.push_back(
      {std::move(method), std::move(pattern), std::move(segments), nullptr, std::move(guarded)});
}

Router::Match Router::Find(Request& req) const {
  Match m;
  m.error_status = 404;
  auto segs = Split(req.path);
  std::vector<std::string> params;
  const Route* get_fallback = nullptr;
  std::vector<std::string> get_params;
  for (const auto& r : routes_) {
    if (!MatchRoute(r.segments, segs, &params)) continue;
    if (r.method == req.method) {
      req.params = params;
      m.handler = r.handler ? &r.handler : nullptr;
      m.streaming = r.streaming ? &r.streaming : nullptr;
      m.error_status = 0;
      m.pattern = &r.pattern;
      return m;
    }
    if (m.pattern == nullptr) m.pattern = &r.pattern;  // a 405 is labelled with the path's route
    if (m.allow.find(r.method) == std::string::npos) m.allow += (m.allow.empty() ? "" : ", ") + r.method;
    if (r.method == "GET" && m.allow.find("HEAD") == std::string::npos) m.allow += ", HEAD";
    if (req.method == "HEAD" && r.method == "GET" && get_fallback == nullptr) {
      get_fallback = &r;
      get_params = params;
    }
    m.error_status = 405;
  }
  if (get_fallback != nullptr && get_fallback->handler) {
    req.params = get_params;
    m.handler = &get_fallback->handler;
    m.error_status = 0;
    m.pattern = &get_fallback->pattern;
  }
  return m;
}

Response Router::NoMatch(const Match& m, const Request& req) {
  if (m.error_status != 405) return Response::Error(NotFound("no route for " + req.path));
  Response r = Response::Error(MethodNotAllowed(req.method + " not allowed on " + req.path));
  r.headers["allow"] = m.allow;
  return r;
}

Response Router::Dispatch(Request& req) const {
  Match m = Find(req);
  if (m.error_status != 0) return NoMatch(m, req);
  if (m.handler) return (*m.handler)(req);
  auto consumer = (*m.streaming)(req);
  if (!consumer.ok()) return Response::Error(consumer.status());
  Status s = (*consumer)->Write(req.body);
  if (!s.ok()) {
    (*consumer)->Abort();
    return Response::Error(s);
  }
  return (*consumer)->Finish();
}

}  // namespace deltastore::api

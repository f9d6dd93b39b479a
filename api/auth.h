// Request authentication: bearer tokens (service/tokens.h) checked against each route's scope.
#pragma once

#include "api/router.h"

namespace deltastore {
class Registry;
}

namespace deltastore::api {

struct AuthOptions {
  bool enabled = false;         // off: every route is open (local development; deltastored warns)
  bool anonymous_read = false;  // on: read routes need no token
};

// Credentials: "Authorization: Bearer <token>", or "Basic base64(<any user>:<token>)" so that a browser
// can open /ui (a 401 offers both schemes). Routes of scope kNone (health) are always open.
Authorizer MakeAuthorizer(Registry* registry, AuthOptions options);

}  // namespace deltastore::api

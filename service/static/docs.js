// /docs: Swagger UI on the API's own document. A token is entered with "Authorize" and kept
// only for the page's life.
"use strict";

window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    displayOperationId: true,
    defaultModelsExpandDepth: 0,
    persistAuthorization: false,
  });
});

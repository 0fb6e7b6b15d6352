// Starts Swagger UI on /schema. A file, not an inline <script>, so the page's
// Content-Security-Policy can allow same-origin scripts only.
const root = document.getElementById('swagger-ui');
window.ui = SwaggerUIBundle({
  url: root.dataset.specUrl,
  dom_id: '#swagger-ui',
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});

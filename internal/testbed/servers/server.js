// The Node.js https server of linger's tests: it requires a client
// certificate issued by the CA (requestCert, rejectUnauthorized), reads the
// request's body and answers 200 "ok". A rejected certificate ends as Node
// ends it (the socket destroyed, nothing waits for the client's FIN).
//
// usage: node server.js HOST PORT CERT KEY CA MINVERSION MAXVERSION REQUIRECERT
'use strict';
const fs = require('fs');
const https = require('https');
const [host, port, cert, key, ca, minVersion, maxVersion, requireCert] = process.argv.slice(2);
const need = requireCert === 'true';
const server = https.createServer({
  cert: fs.readFileSync(cert), key: fs.readFileSync(key), ca: fs.readFileSync(ca),
  requestCert: need, rejectUnauthorized: need, minVersion, maxVersion,
}, (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': '3', 'Connection': 'close'});
    res.end('ok\n');
  });
});
server.listen(Number(port), host, () => console.log('listening on ' + host + ':' + port));

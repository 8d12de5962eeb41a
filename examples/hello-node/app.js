// The quick-start app: a plain Node HTTP server that does nothing to help a reload.
// It answers every request after DELAY_MS (default 500 ms), listens on PORT, and installs no
// signal handler: SIGUSR2 kills it at once. deployer still reloads it without failing a request.
//
// Under `proxy: fd` the agent hands it the listening socket as fd 3 (LISTEN_FDS=1).
const http = require('http');

const delay = Number(process.env.DELAY_MS ?? 500);
const greeting = process.env.GREETING || 'hello';

const server = http.createServer((req, res) => {
  setTimeout(() => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`${greeting} from worker ${process.env.INSTANCE_ID ?? '-'} pid ${process.pid}\n`);
  }, delay);
});

const target = process.env.LISTEN_FDS === '1' ? { fd: 3 } : Number(process.env.PORT || 3000);
server.listen(target, () => {
  console.log(`Server listening on port ${process.env.LISTEN_FDS === '1' ? 'fd:3' : target}`);
});

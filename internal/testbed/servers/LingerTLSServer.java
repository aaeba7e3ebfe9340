// LingerTLSServer is the OpenJDK server of linger's issue 21: an
// SSLServerSocket that needs a client certificate issued by one CA, reads
// an HTTP/1.1 request (its body too) and answers 200 "ok". A rejected
// certificate ends the connection the way the JDK ends it, with the alert
// and a plain close of a socket that may still hold the client's upload.
//
// usage: java -cp DIR LingerTLSServer HOST PORT CERT KEY CA PROTOCOLS NEEDCLIENTAUTH
// CERT and CA are PEM certificates, KEY a PEM PKCS#8 EC or RSA key,
// PROTOCOLS a comma-separated list such as TLSv1.2,TLSv1.3.
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.Base64;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.TrustManagerFactory;

public final class LingerTLSServer {
    public static void main(String[] args) throws Exception {
        if (args.length != 7) {
            System.err.println("usage: LingerTLSServer HOST PORT CERT KEY CA PROTOCOLS NEEDCLIENTAUTH");
            System.exit(2);
        }
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        Certificate cert = cf.generateCertificate(Files.newInputStream(Path.of(args[2])));
        Certificate ca = cf.generateCertificate(Files.newInputStream(Path.of(args[4])));
        PrivateKey key = readKey(Path.of(args[3]));

        char[] pass = "linger".toCharArray();
        KeyStore ks = KeyStore.getInstance("PKCS12");
        ks.load(null, null);
        ks.setKeyEntry("server", key, pass, new Certificate[] {cert});
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, pass);
        // The trust store holds only the CA: the untrusted client's
        // certificate does not chain to it, so the JDK rejects it with
        // certificate_unknown.
        KeyStore ts = KeyStore.getInstance("PKCS12");
        ts.load(null, null);
        ts.setCertificateEntry("ca", ca);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ts);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);

        SSLServerSocket ss = (SSLServerSocket) ctx.getServerSocketFactory()
                .createServerSocket(Integer.parseInt(args[1]), 256, InetAddress.getByName(args[0]));
        ss.setEnabledProtocols(args[5].split(","));
        ss.setNeedClientAuth(Boolean.parseBoolean(args[6]));
        System.out.println("listening on " + ss.getLocalSocketAddress());
        System.out.flush();
        while (true) {
            Socket s = ss.accept();
            Thread t = new Thread(() -> serve(s));
            t.setDaemon(true);
            t.start();
        }
    }

    static PrivateKey readKey(Path p) throws Exception {
        String pem = Files.readString(p);
        String b64 = pem.replaceAll("-----[A-Z ]+-----", "").replaceAll("\\s", "");
        PKCS8EncodedKeySpec spec = new PKCS8EncodedKeySpec(Base64.getDecoder().decode(b64));
        try {
            return KeyFactory.getInstance("EC").generatePrivate(spec);
        } catch (java.security.spec.InvalidKeySpecException e) {
            return KeyFactory.getInstance("RSA").generatePrivate(spec);
        }
    }

    // serve answers one request and closes: any error (the handshake's
    // included) ends in the same close, as a server's catch-all does.
    static void serve(Socket s) {
        try (s) {
            s.setSoTimeout(10000);
            InputStream in = s.getInputStream();
            ByteArrayOutputStream head = new ByteArrayOutputStream();
            int c, last4 = 0;
            while (last4 != 0x0d0a0d0a && (c = in.read()) >= 0) {
                head.write(c);
                last4 = (last4 << 8) | c;
            }
            long length = 0;
            for (String line : head.toString(StandardCharsets.ISO_8859_1).split("\r\n")) {
                int i = line.indexOf(':');
                if (i > 0 && line.substring(0, i).trim().equalsIgnoreCase("content-length")) {
                    length = Long.parseLong(line.substring(i + 1).trim());
                }
            }
            byte[] buf = new byte[16384];
            while (length > 0) {
                int n = in.read(buf, 0, (int) Math.min(buf.length, length));
                if (n < 0) {
                    break;
                }
                length -= n;
            }
            OutputStream out = s.getOutputStream();
            out.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                    .getBytes(StandardCharsets.ISO_8859_1));
            out.flush();
        } catch (Exception e) {
            // The connection ends here; the alert, if any, is already sent.
        }
    }
}
